"""Irreversible masks on planar YUV 4:2:0 frames, and frame orientation helpers.

Masks replace pixels with one flat colour or with coarse blocks (each block
the mean of its pixels, at most a few blocks across a face), never with a
blur that a deconvolution could partly undo.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "Box",
    "fill_box",
    "keep_only",
    "pixelate_box",
    "display_to_stored",
    "to_display",
]

Box = tuple[int, int, int, int]

# Black in limited-range BT.601/709 YUV.
BLACK_YUV = (16, 128, 128)


def _plane_box(box: Box, plane: int) -> Box:
    if plane == 0:
        return box
    x1, y1, x2, y2 = box
    # Chroma planes of 4:2:0 have half the resolution; round outwards.
    return x1 // 2, y1 // 2, (x2 + 1) // 2, (y2 + 1) // 2


def fill_box(planes: list[np.ndarray], box: Box, ring: int = 4) -> None:
    """Fill ``box`` (``x1, y1, x2, y2`` luma pixels) with one flat colour, in place.

    The colour is the mean of a ``ring``-pixel band around the box. A flat
    patch in the colour of its surroundings hides the face as completely as
    black does, but leaves no hard edge that a text or face detector reads as
    a line or a face in the residual check.
    """
    for index, plane in enumerate(planes):
        x1, y1, x2, y2 = _plane_box(box, index)
        width = ring if index == 0 else max(1, ring // 2)
        height_px, width_px = plane.shape
        ox1, oy1 = max(0, x1 - width), max(0, y1 - width)
        ox2, oy2 = min(width_px, x2 + width), min(height_px, y2 + width)
        outer = plane[oy1:oy2, ox1:ox2]
        inner = plane[y1:y2, x1:x2]
        ring_pixels = outer.size - inner.size
        if ring_pixels > 0:
            value = (
                int(outer.sum(dtype=np.int64)) - int(inner.sum(dtype=np.int64))
            ) // ring_pixels
        else:
            value = BLACK_YUV[index]
        inner[...] = value


def pixelate_box(planes: list[np.ndarray], box: Box, blocks: int) -> None:
    """Replace ``box`` by at most ``blocks`` blocks along its longer side, in place."""
    x1, y1, x2, y2 = box
    block = max(8, int(np.ceil(max(x2 - x1, y2 - y1) / max(1, blocks))))
    for index, plane in enumerate(planes):
        px1, py1, px2, py2 = _plane_box(box, index)
        step = block if index == 0 else max(4, block // 2)
        for top in range(py1, py2, step):
            for left in range(px1, px2, step):
                cell = plane[top : min(top + step, py2), left : min(left + step, px2)]
                if cell.size:
                    cell[...] = int(cell.mean())


def keep_only(planes: list[np.ndarray], regions: list[Box]) -> None:
    """Black out everything outside ``regions`` (luma pixel boxes), in place."""
    height, width = planes[0].shape
    keep = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in regions:
        keep[y1:y2, x1:x2] = True
    for index, plane in enumerate(planes):
        mask = (
            keep if index == 0 else keep[::2, ::2][: plane.shape[0], : plane.shape[1]]
        )
        plane[~mask] = BLACK_YUV[index]


def to_display(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate a stored image counter-clockwise by ``rotation`` degrees for display."""
    return np.rot90(image, k=(rotation // 90) % 4)


def display_to_stored(
    boxes: np.ndarray, rotation: int, stored_width: float, stored_height: float
) -> np.ndarray:
    """Map (n, 4) boxes from display to stored image coordinates.

    ``rotation`` is the counter-clockwise rotation that turns the stored image
    into the displayed one. ``stored_width`` and ``stored_height`` are the
    stored image's size at the scale of the boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    quarter_turns = (rotation // 90) % 4
    if quarter_turns == 0:
        return boxes.copy()
    if quarter_turns == 1:
        return np.stack([stored_width - y2, x1, stored_width - y1, x2], axis=1)
    if quarter_turns == 2:
        return np.stack(
            [
                stored_width - x2,
                stored_height - y2,
                stored_width - x1,
                stored_height - y1,
            ],
            axis=1,
        )
    return np.stack([y1, stored_height - x2, y2, stored_height - x1], axis=1)
