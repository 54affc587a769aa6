"""Text detection and masking on frames with known Chinese and English text."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from enclave.deid.text import (
    TextDetector,
    TextRegion,
    default_detector,
    find_static_text,
    mask_text,
    residual_text,
)
from enclave.errors import DeidentificationError

Box = tuple[int, int, int, int]


@cache
def cjk_font_path() -> str:
    """Return the path of a font with Chinese glyphs, as fontconfig lists it."""
    if shutil.which("fc-list") is None:
        pytest.fail("fc-list is missing; install fontconfig and fonts-noto-cjk")
    listing = subprocess.run(
        ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, check=True
    ).stdout
    paths = sorted(line.split(":")[0].strip() for line in listing.splitlines())
    if not paths:
        pytest.fail("no font with Chinese glyphs; install fonts-noto-cjk")
    return paths[0]


def draw_text(image: Image.Image, position: tuple[int, int], text: str, size: int):
    """Draw white ``text`` at ``position`` and return its box (x0, y0, x1, y1)."""
    font = ImageFont.truetype(cjk_font_path(), size)
    draw = ImageDraw.Draw(image)
    draw.text(position, text, font=font, fill=(255, 255, 255))
    x0, y0, x1, y1 = draw.textbbox(position, text, font=font)
    return (int(x0), int(y0), int(x1), int(y1))


def background(index: int, height: int = 360, width: int = 480) -> np.ndarray:
    """Return a dark frame with a bright disc that moves from frame to frame."""
    rng = np.random.default_rng(index)
    frame = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = width // 2 + 4 * index, height // 2
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < 50**2
    frame[disc] = (150, 120, 110)
    return frame


# Overlays of a hospital camera: name, hospital number and a timestamp.
OVERLAYS = [
    ((12, 10), "患者 张伟", 24),
    ((12, 44), "住院号 20231187", 22),
    ((260, 318), "2023-11-05 14:32:08", 20),
]


def render_video(frame_count: int, late: tuple[int, int] | None = None):
    """Render frames with the fixed overlays and an optional late caption.

    Returns the frames and, per overlay, its box and the frames it is on.
    """
    frames, truth = [], {}
    for index in range(frame_count):
        image = Image.fromarray(background(index))
        for position, text, size in OVERLAYS:
            truth[text] = (draw_text(image, position, text, size), 0, frame_count - 1)
        if late is not None and late[0] <= index <= late[1]:
            box = draw_text(image, (200, 150), "李娜 Room 12", 24)
            truth["late"] = (box, late[0], late[1])
        frames.append(np.asarray(image))
    return np.stack(frames), truth


def covered_fraction(regions: list[TextRegion], box: Box, frame_index: int) -> float:
    """Return the fraction of ``box`` that regions on ``frame_index`` cover."""
    x0, y0, x1, y1 = box
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for region in regions:
        if not region.covers(frame_index):
            continue
        rx0, ry0, rx1, ry1 = region.box
        mask[
            max(ry0 - y0, 0) : max(ry1 - y0, 0), max(rx0 - x0, 0) : max(rx1 - x0, 0)
        ] = True
    return float(mask.mean())


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return default_detector()


def test_detect_finds_chinese_and_english(detector):
    frames, truth = render_video(1)

    hits = detector.detect(frames[0])

    regions = [TextRegion(hit.box, 0, 0) for hit in hits]
    for text, (box, _first, _last) in truth.items():
        assert covered_fraction(regions, box, 0) >= 0.95, text


def test_detect_blank_frame_finds_nothing(detector):
    assert detector.detect(np.zeros((240, 320, 3), np.uint8)) == []


def test_detect_updates_counts(detector):
    frames, _truth = render_video(1)
    before = detector.counts

    detector.detect(frames[0])

    after = detector.counts
    assert after["frames_scanned"] == before["frames_scanned"] + 1
    assert after["lines_confirmed"] >= before["lines_confirmed"] + len(OVERLAYS)
    assert all(isinstance(value, int) for value in after.values())


def test_detect_grayscale_16_bit(detector):
    frames, truth = render_video(1)
    gray = frames[0].mean(axis=2).astype(np.uint16) * 16

    hits = detector.detect(gray)

    regions = [TextRegion(hit.box, 0, 0) for hit in hits]
    box = truth["住院号 20231187"][0]
    assert covered_fraction(regions, box, 0) >= 0.95


def test_static_overlay_masked_on_every_frame(detector):
    frames, truth = render_video(23)

    regions = find_static_text(frames, sample_every=10, detector=detector)
    masked = [mask_text(frame, regions, index) for index, frame in enumerate(frames)]

    for text, (box, first, last) in truth.items():
        x0, y0, x1, y1 = box
        for index in range(first, last + 1):
            assert covered_fraction(regions, box, index) >= 0.95, (text, index)
            assert (masked[index][y0:y1, x0:x1] == 0).all(), (text, index)


def test_late_caption_extends_between_samples(detector):
    frames, truth = render_video(25, late=(5, 17))

    regions = find_static_text(frames, sample_every=10, detector=detector)

    box, first, last = truth["late"]
    for index in range(first, last + 1):
        assert covered_fraction(regions, box, index) >= 0.95, index
    late_regions = [r for r in regions if covered_fraction([r], box, 10) > 0.5]
    assert late_regions
    # Samples fall on frames 0, 10, 20 and 24, so the caption must not be
    # stretched onto the samples where it is absent.
    assert min(r.first_frame for r in late_regions) > 0
    assert max(r.last_frame for r in late_regions) < 20


def test_residual_check_clean_after_masking(detector):
    frames, _truth = render_video(8, late=(2, 5))
    regions = find_static_text(frames, sample_every=4, detector=detector)

    masked = np.stack([mask_text(f, regions, i) for i, f in enumerate(frames)])

    assert residual_text(frames, detector=detector, sample_every=7)
    assert residual_text(masked, detector=detector) == []


def test_mask_text_copies_and_fills():
    frame = np.full((50, 60, 3), 200, np.uint8)
    regions = [TextRegion((10, 5, 30, 15), 2, 4), TextRegion((0, 0, 5, 5), 7, 9)]

    masked = mask_text(frame, regions, 3, fill=(0, 0, 255))

    assert (frame == 200).all()
    assert (masked[5:15, 10:30] == (0, 0, 255)).all()
    assert (masked[0:5, 0:5] == 200).all()
    assert (masked[20:, :] == 200).all()


def test_mask_text_clips_box_to_frame():
    frame = np.full((20, 20), 7, np.uint16)

    masked = mask_text(frame, [TextRegion((-5, 15, 40, 60), 0, 0)], 0)

    assert (masked[15:, :] == 0).all()
    assert (masked[:15, :] == 7).all()


def test_engine_failure_fails_closed(monkeypatch):
    detector = TextDetector()

    def broken(image):
        raise RuntimeError("onnxruntime session failed")

    monkeypatch.setattr(detector._engine, "text_det", broken)
    frames, _truth = render_video(2)

    with pytest.raises(DeidentificationError, match="text detection failed"):
        find_static_text(frames, detector=detector)


def test_invalid_arguments_rejected():
    with pytest.raises(ValueError, match="sample_every 0 is invalid"):
        find_static_text(np.zeros((2, 8, 8, 3), np.uint8), sample_every=0)
    with pytest.raises(ValueError, match="threshold 1.5 is invalid"):
        TextDetector(threshold=1.5)
