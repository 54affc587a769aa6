"""Decoding of decrypted plaintext into RGB frames, and the decoder cache."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import decord
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, pixel_array

from enclave import samples
from enclave.broker.decode import DecoderCache, DicomFrames, VideoFrames, open_frames
from enclave.errors import EnclaveError


def pydicom_file(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom does not ship {name}"
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
def carphone() -> bytes:
    return samples.carphone_path().read_bytes()


@pytest.fixture(scope="module")
def carphone_frames(carphone: bytes) -> np.ndarray:
    reader = decord.VideoReader(io.BytesIO(carphone))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def test_video_metadata(carphone: bytes) -> None:
    frames = VideoFrames(carphone)

    assert (frames.frame_count, frames.height, frames.width) == (120, 144, 176)
    assert frames.fps == pytest.approx(29.97, abs=0.01)
    assert frames.timestamps.shape == (120,)
    assert frames.timestamps[0] == 0.0


@pytest.mark.parametrize(
    "ranges",
    [
        [(0, 16), (16, 32), (32, 48)],
        [(16, 32), (0, 16), (48, 64), (32, 48)],
        [(100, 110), (5, 9), (3, 40), (40, 41), (0, 1), (119, 120), (0, 120)],
    ],
    ids=["in-order", "pairs-swapped", "random"],
)
def test_video_reads_in_any_order(
    carphone: bytes, carphone_frames: np.ndarray, ranges: list[tuple[int, int]]
) -> None:
    frames = VideoFrames(carphone)

    for start, stop in ranges:
        assert np.array_equal(frames.read(start, stop), carphone_frames[start:stop])


def test_video_swapped_chunks_decode_once(carphone: bytes) -> None:
    frames = VideoFrames(carphone)
    batches: list[list[int]] = []
    get_batch = frames._reader.get_batch

    def counting_get_batch(indices: list[int]) -> object:
        batches.append(indices)
        return get_batch(indices)

    frames._reader.get_batch = counting_get_batch

    for start, stop in [(16, 32), (0, 16), (48, 64), (32, 48)]:
        frames.read(start, stop)

    # Frame 0 was decoded on open; chunk 0 and chunk 2 come from held frames.
    assert [(b[0], b[-1]) for b in batches] == [(1, 31), (32, 63)]


def test_dicom_ybr_loop_becomes_rgb() -> None:
    data = samples.ultrasound_dicom_path().read_bytes()
    expected = pixel_array(pydicom.dcmread(io.BytesIO(data)))

    frames = DicomFrames(data, fallback_fps=0.0)

    assert np.array_equal(frames.read(0, 30), expected)
    assert frames.fps == pytest.approx(30.0, abs=0.01)
    assert frames.timestamps[1] == pytest.approx(0.0333, abs=1e-4)


def test_dicom_grayscale_gets_three_channels() -> None:
    data = pydicom_file("image_dfl.dcm")
    gray = pixel_array(pydicom.dcmread(io.BytesIO(data)))

    frames = DicomFrames(data, fallback_fps=5.0)
    rgb = frames.read(0, 1)

    assert rgb.shape == (1, 512, 512, 3)
    for channel in range(3):
        assert np.array_equal(rgb[0, ..., channel], gray)
    assert frames.fps == 5.0


def test_dicom_palette_becomes_8_bit_rgb() -> None:
    data = pydicom_file("examples_palette.dcm")
    dataset = pydicom.dcmread(io.BytesIO(data))
    expected = (apply_color_lut(pixel_array(dataset), dataset) >> 8).astype(np.uint8)

    rgb = DicomFrames(data, fallback_fps=1.0).read(0, 1)

    assert rgb.dtype == np.uint8
    assert np.array_equal(rgb[0], expected)


def test_dicom_two_frame_rgb() -> None:
    rgb = DicomFrames(pydicom_file("SC_rgb_rle_2frame.dcm"), fallback_fps=1.0)

    assert rgb.frame_count == 2
    assert rgb.read(0, 2).shape == (2, 100, 100, 3)


def test_dicom_16_bit_is_rejected() -> None:
    with pytest.raises(EnclaveError, match="16 bits allocated is not supported"):
        DicomFrames(pydicom_file("CT_small.dcm"), fallback_fps=1.0)


def test_unknown_media_type_is_rejected(carphone: bytes) -> None:
    with pytest.raises(EnclaveError, match="media type 'audio'"):
        open_frames("audio", carphone, 0.0)


def test_cache_evicts_least_recently_used(carphone: bytes) -> None:
    cache = DecoderCache(max_entries=2, max_bytes=10 * len(carphone))
    load = lambda: ("video", carphone, 0.0)  # noqa: E731

    first = cache.get_or_open("a", load)
    cache.get_or_open("b", load)
    cache.get("a")
    cache.get_or_open("c", load)

    assert cache.get("a") is first
    assert cache.get("b") is None
    assert cache.get("c") is not None


def test_cache_keeps_entry_over_byte_limit(carphone: bytes) -> None:
    cache = DecoderCache(max_entries=8, max_bytes=len(carphone) // 2)
    load = lambda: ("video", carphone, 0.0)  # noqa: E731

    cache.get_or_open("a", load)
    cache.get_or_open("b", load)

    assert cache.get("a") is None
    assert cache.get("b") is not None


def test_cache_loads_once_for_concurrent_requests(carphone: bytes) -> None:
    cache = DecoderCache(max_entries=2, max_bytes=10 * len(carphone))
    loads = []
    entries = []

    def load() -> tuple[str, bytes, float]:
        loads.append(1)
        return "video", carphone, 0.0

    threads = [
        threading.Thread(target=lambda: entries.append(cache.get_or_open("a", load)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(loads) == 1
    assert all(entry is entries[0] for entry in entries)
