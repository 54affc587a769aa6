"""Turn face detections on sampled frames into a mask box for every frame.

The detector runs on every ``detect_every``-th frame, and detections are
linked into tracks by overlap. Between two detections of a track the box is
interpolated and grown by half the distance the face moved. A track is held
for ``hold_frames`` frames before its first and after its last detection, so
a face the detector misses for a few frames stays covered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Track", "link_tracks", "mask_boxes", "grow_box"]

MIN_LINK_IOU = 0.1


@dataclass
class Track:
    """Detections of one face: frame index -> box ``x1, y1, x2, y2``."""

    boxes: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def last_frame(self) -> int:
        return max(self.boxes)

    @property
    def last_box(self) -> np.ndarray:
        return self.boxes[self.last_frame]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return float(overlap / union) if union > 0 else 0.0


def link_tracks(detections: dict[int, np.ndarray], hold_frames: int) -> list[Track]:
    """Link per-frame detections into tracks.

    A detection continues the track whose last box overlaps it most, with an
    IoU of at least 0.1. That track must have been seen within
    ``hold_frames`` frames plus one detector interval. Otherwise the
    detection starts a new track.
    """
    tracks: list[Track] = []
    interval = _interval(sorted(detections))
    for frame in sorted(detections):
        candidates = [
            t for t in tracks if frame - t.last_frame <= hold_frames + interval
        ]
        for box in detections[frame]:
            scored = [
                (iou(t.last_box, box), t) for t in candidates if frame not in t.boxes
            ]
            best_iou, best = max(scored, key=lambda item: item[0], default=(0.0, None))
            if best is not None and best_iou >= MIN_LINK_IOU:
                best.boxes[frame] = box
            else:
                tracks.append(Track({frame: box}))
    return tracks


def _interval(frames: list[int]) -> int:
    if len(frames) < 2:
        return 1
    return int(np.min(np.diff(frames)))


def mask_boxes(
    tracks: list[Track], frame_count: int, hold_frames: int
) -> list[list[np.ndarray]]:
    """Return, for each frame, the face boxes to mask (before growing)."""
    per_frame: list[list[np.ndarray]] = [[] for _ in range(frame_count)]
    for track in tracks:
        frames = sorted(track.boxes)
        first, last = frames[0], frames[-1]
        for index in range(max(0, first - hold_frames), first):
            per_frame[index].append(track.boxes[first])
        for index in range(last + 1, min(frame_count, last + hold_frames + 1)):
            per_frame[index].append(track.boxes[last])
        for start, end in zip(frames, frames[1:], strict=False):
            per_frame[start].append(track.boxes[start])
            for index in range(start + 1, end):
                per_frame[index].append(
                    _between(track.boxes[start], track.boxes[end], start, end, index)
                )
        per_frame[last].append(track.boxes[last])
    return per_frame


def _between(
    a: np.ndarray, b: np.ndarray, start: int, end: int, index: int
) -> np.ndarray:
    # Linear interpolation, grown on every side by half the centre's movement
    # between the two detections so that uneven motion stays covered.
    weight = (index - start) / (end - start)
    box = a + (b - a) * weight
    centre_a = (a[:2] + a[2:]) / 2
    centre_b = (b[:2] + b[2:]) / 2
    margin = float(np.abs(centre_b - centre_a).max()) / 2
    return box + np.array([-margin, -margin, margin, margin], dtype=box.dtype)


def grow_box(
    box: np.ndarray, scale: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """Grow a face box by ``scale`` and clip it to the frame.

    The box grows more upwards than downwards (60 % above, 40 % below)
    because hair and the top of the head extend above the detected face. It
    grows equally to the left and right to take in the ears.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    extra_w = (x2 - x1) * (scale - 1) / 2
    extra_h = (y2 - y1) * (scale - 1)
    return (
        max(0, int(np.floor(x1 - extra_w))),
        max(0, int(np.floor(y1 - 0.6 * extra_h))),
        min(width, int(np.ceil(x2 + extra_w))),
        min(height, int(np.ceil(y2 + 0.4 * extra_h))),
    )
