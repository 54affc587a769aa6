"""Find and mask burned-in text (Chinese and English) in video frames and images.

The detector wraps RapidOCR (``rapidocr_onnxruntime.RapidOCR``), whose PP-OCR
detection and recognition models ship inside the package, so nothing is
downloaded. Detection finds candidate text lines; recognition decides whether a
candidate is text (its confidence must reach ``threshold``). The recognized
strings are patient data: they are never logged, stored or returned, only
counted.

Public API used by the video pipeline and by :mod:`enclave.deid.dicom`:

- :class:`TextDetector` ``(threshold=0.5, detect_side=960, threads=None)``: the
  engine, with :meth:`TextDetector.detect` for one frame and
  :attr:`TextDetector.counts`.
- :func:`find_static_text` ``(frames, sample_every=N, detector=None,
  sample_hits=None)`` returns a list of :class:`TextRegion` ``(box=(x0, y0,
  x1, y1), first_frame, last_frame)``.
- :func:`mask_text` ``(frame, regions, frame_index, fill=0)`` returns the frame
  with every region that covers ``frame_index`` filled with a solid value.
- :func:`residual_text` ``(frames, threshold=0.4, sample_every=1)`` returns the
  :class:`TextHit` list of the stricter check after masking.

Frames are numpy arrays of shape ``(height, width)`` or ``(height, width,
channels)`` in RGB order; other dtypes than ``uint8`` are rescaled to 8 bits
for detection only. Any failure of the OCR engine raises
:class:`~enclave.errors.DeidentificationError`, so a frame is never released
unchecked.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from enclave.errors import DeidentificationError, ValidationError

__all__ = [
    "TextDetector",
    "TextHit",
    "TextRegion",
    "default_detector",
    "find_static_text",
    "mask_text",
    "residual_text",
]

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

# Frames are scaled so their long side is near ``detect_side`` before detection.
# On pydicom's 320 x 240 ultrasound loop, PP-OCR found 5 of the 8-pixel-tall
# annotation lines at the original size and all 16 at 3 times the size, so
# small frames are enlarged. A 1920 x 1080 camera frame is halved. The bounds
# keep enlargement cheap and stop 4K frames from shrinking text too far.
_MIN_SCALE = 0.5
_MAX_SCALE = 4.0

# A detected line taller than this fraction of the frame needs a recognition
# confidence of at least _LARGE_LINE_THRESHOLD. Large real text is rendered with
# many pixels per glyph and recognized with high confidence, while ultrasound
# tissue that the detector mistakes for one huge "line" scored 0.32 - 0.46 on
# pydicom's ultrasound loop.
_LARGE_LINE_FRACTION = 0.15
_LARGE_LINE_THRESHOLD = 0.8

# The detection network needs inputs whose sides are multiples of 32 pixels;
# crops smaller than this are padded before detection.
_MIN_CROP_SIDE = 64


@dataclass(frozen=True)
class TextRegion:
    """A text box that stays in place over a range of frames.

    Attributes
    ----------
    box
        ``(x0, y0, x1, y1)`` in pixels of the full frame; ``x1`` and ``y1`` are
        exclusive, so ``frame[y0:y1, x0:x1]`` is the region.
    first_frame, last_frame
        Index of the first and the last frame (inclusive) the region covers.
    """

    box: Box
    first_frame: int
    last_frame: int

    def covers(self, frame_index: int) -> bool:
        """Return whether the region is present on frame ``frame_index``."""
        return self.first_frame <= frame_index <= self.last_frame


@dataclass(frozen=True)
class TextHit:
    """Text found on one frame: its box, frame index and recognition score."""

    frame_index: int
    box: Box
    score: float


class TextDetector:
    """Detect text lines on frames with RapidOCR's PP-OCR models.

    Parameters
    ----------
    threshold
        Minimum recognition confidence (0 to 1) for a detected line to count as
        text. Lower values raise recall and mask more non-text. A line taller
        than 15% of the frame needs at least 0.8.
    detect_side
        Target length in pixels of the long side of a frame during detection.
        Frames are scaled by ``detect_side / long_side``, bounded to 0.5 - 4.
    threads
        Intra-op threads of the OCR engine's onnxruntime sessions; default:
        onnxruntime's default (one per physical core). The video pipeline
        uses 1 and runs OCR beside its face detection threads.

    Raises
    ------
    DeidentificationError
        If the OCR engine cannot be loaded.

    Examples
    --------
    >>> detector = TextDetector(threshold=0.5)
    >>> detector.detect(np.zeros((240, 320, 3), np.uint8))
    []
    """

    def __init__(
        self,
        threshold: float = 0.5,
        *,
        detect_side: int = 960,
        threads: int | None = None,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValidationError(
                f"text threshold {threshold!r} is invalid; use a value from 0 to 1"
            )
        if detect_side < 64:
            raise ValidationError(
                f"detect_side {detect_side!r} is too small; use 64 pixels or more"
            )
        self.threshold = float(threshold)
        self.detect_side = int(detect_side)
        if threads is not None and threads < 1:
            raise ValidationError(
                f"OCR threads {threads!r} is invalid; use 1 or more, or None"
            )
        self._engine = _load_engine(threads)
        self._lock = threading.Lock()
        self._counts = {
            "frames_scanned": 0,
            "lines_detected": 0,
            "lines_confirmed": 0,
            "lines_rejected": 0,
        }

    @property
    def counts(self) -> dict[str, int]:
        """Counters of scanned frames and detected, confirmed and rejected lines."""
        with self._lock:
            return dict(self._counts)

    def scale_for(self, height: int, width: int) -> float:
        """Return the factor applied to a frame of this size before detection."""
        scale = self.detect_side / max(height, width, 1)
        return float(min(max(scale, _MIN_SCALE), _MAX_SCALE))

    def detect(
        self, frame: np.ndarray, *, threshold: float | None = None, passes: int = 3
    ) -> list[TextHit]:
        """Detect text lines on one frame.

        Parameters
        ----------
        frame
            Image of shape ``(height, width)`` or ``(height, width, channels)``.
        threshold
            Recognition confidence a line needs; defaults to ``self.threshold``.
        passes
            Maximum number of detection passes. After each pass the lines found
            are blanked and the frame is searched again, because a strong line
            can hide a weaker neighbour from the detector.

        Returns
        -------
        list of TextHit
            One hit per confirmed line with ``frame_index`` set to -1; the box
            is in full-frame pixels and padded so it covers the glyphs' edges.

        Raises
        ------
        DeidentificationError
            If detection or recognition fails.
        """
        threshold = self.threshold if threshold is None else threshold
        image = _to_bgr8(frame)
        height, width = image.shape[:2]
        scale = self.scale_for(height, width)
        scaled = np.array(_resize(image, scale), copy=True)

        hits: list[TextHit] = []
        detected = 0
        for _ in range(max(passes, 1)):
            quads = self._run_detection(scaled)
            scores = self._run_recognition(scaled, quads)
            detected += len(quads)
            confirmed = 0
            for quad, score in zip(quads, scores, strict=True):
                x0, y0, x1, y1 = _quad_to_box(quad, 1.0)
                scaled[max(y0, 0) : y1, max(x0, 0) : x1] = 0
                box = _pad_box(_quad_to_box(quad, scale), height, width)
                required = threshold
                if box[3] - box[1] > _LARGE_LINE_FRACTION * height:
                    required = max(threshold, _LARGE_LINE_THRESHOLD)
                if score >= required:
                    hits.append(TextHit(frame_index=-1, box=box, score=float(score)))
                    confirmed += 1
            if not confirmed:
                break

        self._count(detected, len(hits))
        return hits

    def detect_in_box(self, frame: np.ndarray, box: Box) -> bool:
        """Return whether text is detected overlapping ``box`` on ``frame``.

        Only the neighbourhood of ``box`` is searched and recognition is
        skipped, because this check decides how far a known region extends and
        a false positive only masks a few more pixels.
        """
        image = _to_bgr8(frame)
        height, width = image.shape[:2]
        scale = self.scale_for(height, width)
        x0, y0, x1, y1 = box
        margin = max(y1 - y0, int(_MIN_CROP_SIDE / scale) // 2)
        cx0, cy0 = max(x0 - margin, 0), max(y0 - margin, 0)
        cx1, cy1 = min(x1 + margin, width), min(y1 + margin, height)
        crop = _resize(image[cy0:cy1, cx0:cx1], scale)
        crop = _pad_to_min_side(crop, _MIN_CROP_SIDE)

        quads = self._run_detection(crop)
        inner = (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)
        for quad in quads:
            if _intersects(_quad_to_box(quad, scale), inner):
                return True
        return False

    def _run_detection(self, image: np.ndarray) -> list[np.ndarray]:
        try:
            quads, _elapsed = self._engine.text_det(image)
        except Exception as exc:
            raise DeidentificationError(
                "text detection failed, so the frame was not released; "
                "check that rapidocr_onnxruntime and onnxruntime are installed"
            ) from exc
        if quads is None or len(quads) == 0:
            return []
        return [np.asarray(quad, dtype=np.float32) for quad in quads]

    def _run_recognition(
        self, image: np.ndarray, quads: list[np.ndarray]
    ) -> list[float]:
        if not quads:
            return []
        try:
            crops = self._engine.get_crop_img_list(image, quads)
            results, _elapsed = self._engine.text_rec(crops)
        except Exception as exc:
            raise DeidentificationError(
                "text recognition failed, so the frame was not released; "
                "check that rapidocr_onnxruntime and onnxruntime are installed"
            ) from exc
        # Only the confidence leaves this method: the string is patient data.
        return [float(score) if text.strip() else 0.0 for text, score, *_ in results]

    def _count(self, detected: int, confirmed: int) -> None:
        with self._lock:
            self._counts["frames_scanned"] += 1
            self._counts["lines_detected"] += detected
            self._counts["lines_confirmed"] += confirmed
            self._counts["lines_rejected"] += detected - confirmed


@functools.cache
def _load_engine(threads: int | None = None):
    try:
        from rapidocr_onnxruntime import RapidOCR

        # The detector resizes frames itself; a large limit of type "max" makes
        # the engine only round the sides to multiples of 32.
        # NOTE: TextDetector calls the engine's text_det, get_crop_img_list and
        # text_rec members (rapidocr_onnxruntime 1.4.4), which are not a
        # documented API and may change in other versions.
        options = {"det_limit_type": "max", "det_limit_side_len": 100_000}
        if threads is not None:
            # rapidocr_onnxruntime 1.4.4 ignores values above os.cpu_count().
            options["intra_op_num_threads"] = min(threads, os.cpu_count() or 1)
        return RapidOCR(**options)
    except Exception as exc:
        raise DeidentificationError(
            "the OCR engine could not be loaded, so no frame can be checked for "
            "text; install rapidocr-onnxruntime with its bundled PP-OCR models"
        ) from exc


@functools.cache
def default_detector(
    threshold: float = 0.5, threads: int | None = None
) -> TextDetector:
    """Return a shared :class:`TextDetector` for ``threshold`` and ``threads``."""
    return TextDetector(threshold, threads=threads)


def find_static_text(
    frames: Sequence[np.ndarray] | np.ndarray,
    sample_every: int = 30,
    *,
    detector: TextDetector | None = None,
    sample_hits: Mapping[int, Sequence[TextHit]] | None = None,
) -> list[TextRegion]:
    """Find text overlays that stay in place and the frames they cover.

    Text is detected on every ``sample_every``-th frame and on the last frame.
    Boxes that overlap on consecutive samples form one region whose box is the
    union of theirs. Between a sample where a region is present and one where
    it is absent, the frames in the gap are searched near the box, and the
    region extends to the farthest frame where text is still detected there.

    Parameters
    ----------
    frames
        Frames in display order: an array of shape ``(frames, height, width
        [, channels])`` or any sequence that supports ``len`` and indexing.
    sample_every
        Distance in frames between the frames that are fully scanned.
    detector
        The detector to use; defaults to :func:`default_detector`.
    sample_hits
        Hits that ``detector.detect`` already returned for sampled frames, by
        frame index, so that a caller can scan the samples while it decodes.
        Sampled frames missing from it are scanned here.

    Returns
    -------
    list of TextRegion
        Regions in the order they first appear.

    Raises
    ------
    DeidentificationError
        If the OCR engine fails.

    Notes
    -----
    Text shown for fewer than ``sample_every`` frames between two samples can
    be missed entirely; :func:`residual_text` on every frame finds it.
    """
    if sample_every < 1:
        raise ValidationError(
            f"sample_every {sample_every!r} is invalid; use 1 or more frames"
        )
    detector = detector or default_detector()
    total = len(frames)
    if total == 0:
        return []

    samples = list(range(0, total, sample_every))
    if samples[-1] != total - 1:
        samples.append(total - 1)

    tracks = _track_boxes(detector, frames, samples, sample_hits or {})
    regions = [_extend_track(detector, frames, samples, t) for t in tracks]
    logger.debug(
        "found %d text regions on %d sampled frames of %d",
        len(regions),
        len(samples),
        total,
    )
    return regions


@dataclass
class _Track:
    box: Box
    first_sample: int  # position in the list of sampled frame indices
    last_sample: int


def _track_boxes(
    detector: TextDetector,
    frames,
    samples: list[int],
    sample_hits: Mapping[int, Sequence[TextHit]],
) -> list[_Track]:
    tracks: list[_Track] = []
    for position, frame_index in enumerate(samples):
        hits = sample_hits.get(frame_index)
        if hits is None:
            hits = detector.detect(np.asarray(frames[frame_index]))
        for hit in hits:
            track = _matching_track(tracks, hit.box, position)
            if track is None:
                tracks.append(_Track(hit.box, position, position))
            else:
                track.box = _union(track.box, hit.box)
                track.last_sample = position
    return tracks


def _matching_track(tracks: list[_Track], box: Box, position: int) -> _Track | None:
    # A track continues when it was seen on this or the previous sample and
    # its box overlaps at least half of the smaller of the two boxes.
    for track in tracks:
        if track.last_sample not in (position, position - 1):
            continue
        if _overlap_ratio(track.box, box) >= 0.5:
            return track
    return None


def _extend_track(
    detector: TextDetector, frames, samples: list[int], track: _Track
) -> TextRegion:
    first = samples[track.first_sample]
    last = samples[track.last_sample]

    if track.first_sample > 0:
        previous = samples[track.first_sample - 1]
        for index in range(previous + 1, first):
            if detector.detect_in_box(np.asarray(frames[index]), track.box):
                first = index
                break

    if track.last_sample < len(samples) - 1:
        following = samples[track.last_sample + 1]
        for index in range(following - 1, last, -1):
            if detector.detect_in_box(np.asarray(frames[index]), track.box):
                last = index
                break

    return TextRegion(box=track.box, first_frame=first, last_frame=last)


def mask_text(
    frame: np.ndarray,
    regions: Sequence[TextRegion],
    frame_index: int,
    *,
    fill: float | Sequence[float] = 0,
) -> np.ndarray:
    """Fill every region that covers ``frame_index`` with a solid value.

    The pixels themselves change, so the text cannot be recovered from the
    output. ``frame`` is left unchanged and a masked copy is returned.

    Parameters
    ----------
    frame
        Image of shape ``(height, width)`` or ``(height, width, channels)``.
    regions
        Regions from :func:`find_static_text` (or built by the caller).
    frame_index
        Index of ``frame`` in its video, compared with each region's range.
    fill
        Pixel value written into the regions; one value or one per channel.

    Returns
    -------
    numpy.ndarray
        The masked copy, of the same shape and dtype as ``frame``.
    """
    masked = np.array(frame, copy=True)
    height, width = masked.shape[:2]
    for region in regions:
        if not region.covers(frame_index):
            continue
        x0, y0, x1, y1 = region.box
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, width), min(y1, height)
        if x1 > x0 and y1 > y0:
            masked[y0:y1, x0:x1] = fill
    return masked


def residual_text(
    frames: Sequence[np.ndarray] | np.ndarray,
    threshold: float = 0.4,
    *,
    sample_every: int = 1,
    detector: TextDetector | None = None,
    passes: int = 1,
) -> list[TextHit]:
    """Search masked frames for any remaining text with a lower threshold.

    Parameters
    ----------
    frames
        The frames after masking, in display order.
    threshold
        Recognition confidence that counts as text; lower than the masking
        default of 0.5, so this check is stricter than the one that masked.
        On the ultrasound loop of pydicom's test data, small tissue details
        that the detector mistakes for text score 0.32 - 0.39, hence 0.4.
    sample_every
        Check every n-th frame (and the last one); 1 checks every frame.
    detector
        The detector to use; defaults to :func:`default_detector`.
    passes
        Detection passes per frame (see :meth:`TextDetector.detect`). One pass
        decides whether a frame is clean; more find every line on a dirty one.

    Returns
    -------
    list of TextHit
        Text that remains, empty when the frames are clean.

    Raises
    ------
    DeidentificationError
        If the OCR engine fails, so an unchecked frame never counts as clean.
    """
    if sample_every < 1:
        raise ValidationError(
            f"sample_every {sample_every!r} is invalid; use 1 or more frames"
        )
    detector = detector or default_detector()
    total = len(frames)
    indices = list(range(0, total, sample_every))
    if indices and indices[-1] != total - 1:
        indices.append(total - 1)

    hits: list[TextHit] = []
    for index in indices:
        frame = np.asarray(frames[index])
        for hit in detector.detect(frame, threshold=threshold, passes=passes):
            hits.append(TextHit(frame_index=index, box=hit.box, score=hit.score))
    logger.debug("residual text check: %d hits on %d frames", len(hits), len(indices))
    return hits


def _to_bgr8(frame: np.ndarray) -> np.ndarray:
    import cv2

    image = np.asarray(frame)
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValidationError(
            f"frame of shape {image.shape!r} is invalid; expected (height, width) "
            "or (height, width, channels)"
        )
    if image.dtype != np.uint8:
        image = _rescale_to_uint8(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGBA2BGR)
    if image.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    raise ValidationError(
        f"frame with {image.shape[2]} channels is invalid; use 1, 3 or 4 channels"
    )


def _rescale_to_uint8(image: np.ndarray) -> np.ndarray:
    values = image.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    return ((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(int(round(width * scale)), 1), max(int(round(height * scale)), 1))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def _pad_to_min_side(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    pad_y, pad_x = max(side - height, 0), max(side - width, 0)
    if not pad_y and not pad_x:
        return image
    # Padding goes at the bottom and right so crop coordinates stay valid.
    return np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")


def _quad_to_box(quad: np.ndarray, scale: float) -> Box:
    xs, ys = quad[:, 0] / scale, quad[:, 1] / scale
    x0, y0 = int(np.floor(xs.min())), int(np.floor(ys.min()))
    x1, y1 = int(np.ceil(xs.max())) + 1, int(np.ceil(ys.max())) + 1
    return (x0, y0, x1, y1)


def _pad_box(box: Box, height: int, width: int) -> Box:
    # The detector's box hugs the glyphs; a margin of a fifth of the line
    # height (at least 2 pixels) also covers anti-aliased edges.
    x0, y0, x1, y1 = box
    margin = max(2, (y1 - y0) // 5)
    return (
        max(x0 - margin, 0),
        max(y0 - margin, 0),
        min(x1 + margin, width),
        min(y1 + margin, height),
    )


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _intersection_area(a: Box, b: Box) -> int:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(width, 0) * max(height, 0)


def _intersects(a: Box, b: Box) -> bool:
    return _intersection_area(a, b) > 0


def _overlap_ratio(a: Box, b: Box) -> float:
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    if smaller <= 0:
        return 0.0
    return _intersection_area(a, b) / smaller
