"""Decoding of decrypted derivatives into RGB frames, with a small cache.

Plaintext is held only in memory (a ``BytesIO`` handed to decord or
pydicom); the broker never writes a decrypted asset to disk.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from enclave.errors import EnclaveError

__all__ = [
    "DecodedAsset",
    "DecoderCache",
    "DicomFrames",
    "FrameSource",
    "VideoFrames",
    "open_frames",
]

log = logging.getLogger(__name__)

# Frames decoded ahead of an out-of-order request and held for the request
# that skipped them: at most this many, and at most this many bytes.
HELD_FRAMES = 64
HELD_BYTES = 32 * 1024 * 1024


class FrameSource:
    """Random access to the RGB frames of one decrypted asset.

    Subclasses set ``frame_count``, ``height``, ``width``, ``fps`` and
    ``timestamps`` and implement :meth:`read`. Calls are serialised by the
    cache entry's lock because decoders keep a read position.
    """

    frame_count: int
    height: int
    width: int
    fps: float
    timestamps: np.ndarray
    """Start time of each frame in seconds, float64, length ``frame_count``."""

    def read(self, start: int, stop: int) -> np.ndarray:
        """Decode frames ``[start, stop)`` as a uint8 array (n, height, width, 3)."""
        raise NotImplementedError


class VideoFrames(FrameSource):
    """Frames of a video container, decoded by decord.

    Dask fetches chunks from several threads, so chunk ``k + 1`` can arrive
    before chunk ``k``. decord would then seek back to a key frame for chunk
    ``k``, which for a long group of pictures means decoding the clip from
    its start again. Instead, when a request starts a little ahead of the
    decoder's position, the frames in between are decoded too and held for
    the request that will ask for them.
    """

    def __init__(self, plaintext: bytes) -> None:
        import decord

        # decord (decord2 3.4) copies a file object's bytes into its own
        # buffer and decodes from memory, so nothing is written to disk.
        self._reader = decord.VideoReader(io.BytesIO(plaintext), ctx=decord.cpu(0))
        self.frame_count = len(self._reader)
        first = self._reader[0].asnumpy() if self.frame_count else None
        shape = first.shape if first is not None else (0, 0, 3)
        self.height, self.width = int(shape[0]), int(shape[1])
        self.fps = float(self._reader.get_avg_fps())
        if self.frame_count:
            stamps = self._reader.get_frame_timestamp(range(self.frame_count))
            self.timestamps = np.asarray(stamps[:, 0], dtype=np.float64)
        else:
            self.timestamps = np.zeros(0, dtype=np.float64)

        # Frame that decord decodes next without seeking (after frame 0 above).
        self._next_frame = 1
        self._held: dict[int, np.ndarray] = {} if first is None else {0: first}
        frame_bytes = max(1, self.height * self.width * 3)
        self._max_held = min(HELD_FRAMES, HELD_BYTES // frame_bytes)

    def read(self, start: int, stop: int) -> np.ndarray:
        wanted = range(start, stop)
        if all(index in self._held for index in wanted):
            return np.stack([self._held.pop(index) for index in wanted])

        first = start
        if 0 < start - self._next_frame <= self._max_held:
            first = self._next_frame
        batch = self._reader.get_batch(list(range(first, stop))).asnumpy()
        self._next_frame = stop

        # Hold the frames skipped over for this request; the oldest held
        # frames go first, so memory stays within HELD_BYTES.
        for offset in range(start - first):
            self._held[first + offset] = batch[offset]
        while len(self._held) > self._max_held:
            del self._held[next(iter(self._held))]
        return np.ascontiguousarray(batch[start - first :], dtype=np.uint8)


class DicomFrames(FrameSource):
    """Frames of a multi-frame DICOM object, converted to RGB by pydicom."""

    def __init__(self, plaintext: bytes, fallback_fps: float) -> None:
        import pydicom
        from pydicom.pixels import apply_color_lut, pixel_array

        dataset = pydicom.dcmread(io.BytesIO(plaintext))
        interpretation = str(dataset.get("PhotometricInterpretation", ""))
        bits = int(dataset.get("BitsAllocated", 8))
        if bits != 8:
            # NOTE: 16-bit grayscale (CT, MR) needs a window to become video
            # frames; ultrasound and endoscopy cine loops are 8-bit.
            raise EnclaveError(
                f"DICOM with {bits} bits allocated is not supported; "
                "only 8-bit frames can be served"
            )

        # pixel_array converts YBR_FULL and YBR_FULL_422 to RGB (raw=False).
        frames = pixel_array(dataset)
        if interpretation == "PALETTE COLOR":
            frames = _palette_to_rgb8(apply_color_lut(frames, dataset))
        frames = _as_rgb_frames(frames, int(dataset.get("NumberOfFrames", 1) or 1))

        self._frames = np.ascontiguousarray(frames, dtype=np.uint8)
        self.frame_count, self.height, self.width = self._frames.shape[:3]
        self.fps, self.timestamps = _dicom_timing(
            dataset, self.frame_count, fallback_fps
        )

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._frames[start:stop].copy()


def _palette_to_rgb8(frames: np.ndarray) -> np.ndarray:
    # Palette entries are usually 16-bit (descriptor's third value 16); keep
    # the high byte. Some writers declare 16 bits but store 8-bit values,
    # which are kept as they are.
    if frames.dtype == np.uint8 or int(frames.max(initial=0)) <= 255:
        return frames.astype(np.uint8)
    return (frames >> 8).astype(np.uint8)


def _as_rgb_frames(frames: np.ndarray, frame_count: int) -> np.ndarray:
    # pydicom drops the frame axis of a single-frame object, and grayscale
    # frames have no channel axis.
    if frame_count == 1:
        frames = frames[np.newaxis]
    if frames.ndim == 3:
        frames = np.repeat(frames[..., np.newaxis], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise EnclaveError(f"DICOM pixel data of shape {frames.shape} is not video")
    return frames


def _dicom_timing(dataset, frame_count: int, fallback_fps: float):  # type: ignore[no-untyped-def]
    # Frame Time (0018,1063) is milliseconds per frame; Frame Time Vector
    # (0018,1065) contains the increments of a variable rate, the first being 0.
    vector = dataset.get("FrameTimeVector")
    if vector is not None and len(vector) == frame_count:
        stamps = np.cumsum(np.asarray(vector, dtype=np.float64)) / 1000.0
        duration = stamps[-1] if frame_count > 1 else 0.0
        fps = (frame_count - 1) / duration if duration > 0 else fallback_fps
        return float(fps), stamps

    frame_time = dataset.get("FrameTime")
    if frame_time:
        fps = 1000.0 / float(frame_time)
    elif dataset.get("CineRate"):
        fps = float(dataset.CineRate)
    else:
        fps = fallback_fps or 1.0
    return float(fps), np.arange(frame_count, dtype=np.float64) / fps


def open_frames(media_type: str, plaintext: bytes, fallback_fps: float) -> FrameSource:
    """Open a decoder over ``plaintext`` according to the asset's media type."""
    if media_type == "video":
        return VideoFrames(plaintext)
    if media_type == "dicom":
        return DicomFrames(plaintext, fallback_fps)
    raise EnclaveError(f"media type {media_type!r} cannot be decoded into frames")


@dataclass
class DecodedAsset:
    """A cache entry: an open decoder and the lock that serialises its reads."""

    source: FrameSource
    size: int
    lock: threading.Lock


class DecoderCache:
    """Least-recently-used map from asset id to an open :class:`FrameSource`.

    Parameters
    ----------
    max_entries : int
        Assets kept open.
    max_bytes : int
        Plaintext bytes kept in total; the most recent entry is always kept.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, DecodedAsset] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, asset_id: str) -> DecodedAsset | None:
        """Return the open entry of ``asset_id``, or None if it is not cached."""
        with self._lock:
            entry = self._entries.get(asset_id)
            if entry is not None:
                self._entries.move_to_end(asset_id)
            return entry

    def get_or_open(
        self, asset_id: str, load: Callable[[], tuple[str, bytes, float]]
    ) -> DecodedAsset:
        """Return the entry of ``asset_id``, opening it with ``load()`` if needed.

        ``load`` returns (media type, plaintext, fallback fps). Concurrent
        requests for the same asset wait for one load instead of decrypting
        it twice.
        """
        entry = self.get(asset_id)
        if entry is not None:
            return entry

        with self._lock:
            loading = self._loading.setdefault(asset_id, threading.Lock())
        with loading:
            entry = self.get(asset_id)
            if entry is not None:
                return entry
            media_type, plaintext, fallback_fps = load()
            source = open_frames(media_type, plaintext, fallback_fps)
            entry = DecodedAsset(source, len(plaintext), threading.Lock())
            self._insert(asset_id, entry)
        with self._lock:
            self._loading.pop(asset_id, None)
        return entry

    def asset_ids(self) -> list[str]:
        """Return the ids of the cached assets, least recently used first."""
        with self._lock:
            return list(self._entries)

    def discard(self, asset_id: str) -> None:
        """Drop ``asset_id`` from the cache (its asset was destroyed)."""
        with self._lock:
            self._entries.pop(asset_id, None)

    def _insert(self, asset_id: str, entry: DecodedAsset) -> None:
        with self._lock:
            self._entries[asset_id] = entry
            self._entries.move_to_end(asset_id)
            total = sum(e.size for e in self._entries.values())
            while len(self._entries) > 1 and (
                len(self._entries) > self._max_entries or total > self._max_bytes
            ):
                _, evicted = self._entries.popitem(last=False)
                total -= evicted.size
            log.debug(
                "decoder cache contains %d assets, %d bytes", len(self._entries), total
            )
