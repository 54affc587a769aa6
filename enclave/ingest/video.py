"""Probe a video container (MP4, MOV, MKV, AVI) with PyAV by decoding every frame."""

from __future__ import annotations

import logging
import statistics
from fractions import Fraction
from typing import Any, BinaryIO

import av
import av.error

from enclave.catalog.models import MediaType
from enclave.errors import IngestError
from enclave.ingest.result import ProbeResult, check_resolution
from enclave.ingest.sniff import CONTAINER_NAMES

__all__ = ["probe_video"]

log = logging.getLogger(__name__)

# Short container name -> FFmpeg demuxer. Naming the demuxer stops FFmpeg from
# guessing another format from the content.
_DEMUXERS = {"mp4": "mov", "mov": "mov", "mkv": "matroska", "avi": "avi"}

# Frame intervals may differ from the median by this fraction (or one tick of
# the time base) before the video counts as variable frame rate. Rounding to a
# 1 ms time base makes 29.97 fps intervals alternate between 33 and 34 ms.
_VFR_TOLERANCE = 0.02


def probe_video(
    name: str, source: str | BinaryIO, container: str, size: int
) -> ProbeResult:
    """Probe a video container, decoding every frame to prove it is complete.

    Parameters
    ----------
    name
        File name for error messages.
    source
        Path of the file, or a binary file object positioned at its start.
    container
        Short container name found by :func:`~enclave.ingest.sniff.sniff_container`.
    size
        File size in bytes.

    Raises
    ------
    IngestError
        If the file does not open, has no video stream, exceeds the
        resolution limits, or decodes fewer frames than its index lists.
    """
    kind = CONTAINER_NAMES[container]
    # Reading only local files stops a crafted file from making FFmpeg open
    # URLs or other files (HLS playlists, concat lists, data references).
    options = {"protocol_whitelist": "file"} if isinstance(source, str) else {}
    try:
        media = av.open(
            source,
            format=_DEMUXERS[container],
            options=options,
            metadata_errors="ignore",
        )
    except av.error.FFmpegError as exc:
        raise IngestError(
            f"{name}: the {kind} container cannot be opened ({exc.strerror}); "
            "the file is truncated or damaged, so copy it again from its source"
        ) from exc

    with media:
        if not media.streams.video:
            raise IngestError(f"{name}: the {kind} file contains no video stream")
        # NOTE: only the first video stream is probed and later served; files
        # with several video streams (multi-angle recordings) lose the others.
        stream = media.streams.video[0]
        width = stream.codec_context.width
        height = stream.codec_context.height
        check_resolution(name, width, height)
        decoded = _decode_all(name, kind, media, stream)
        _check_frame_count(name, kind, stream.frames, decoded.frames)

        time_base = stream.time_base or Fraction(1, 1)
        duration_s = _duration(stream, media, decoded, time_base)
        return ProbeResult(
            media_type=MediaType.VIDEO,
            container=container,
            video_codec=stream.codec_context.name,
            width=width,
            height=height,
            fps=_frame_rate(stream, decoded.frames, duration_s),
            duration_s=duration_s,
            frame_count=decoded.frames,
            rotation=decoded.rotation,
            variable_frame_rate=_is_variable(decoded.intervals),
            has_audio=bool(media.streams.audio),
            size=size,
            extra=_extra(media, stream, decoded.intervals, time_base),
        )


def _check_frame_count(name: str, kind: str, header_frames: int, decoded: int) -> None:
    # Matroska and some AVI writers store no frame count (0): nothing to compare.
    if header_frames and decoded < header_frames:
        raise IngestError(
            f"{name}: the index lists {header_frames} frames but only {decoded} "
            "decode; the file is truncated, so copy it again from its source"
        )
    if decoded == 0:
        raise IngestError(f"{name}: no frame of the {kind} file can be decoded")


class _Decoded:
    """Frame count, clockwise rotation and pts intervals found by decoding."""

    def __init__(self) -> None:
        self.frames = 0
        self.rotation = 0
        self.pts: list[int] = []
        self.intervals: list[int] = []


def _decode_all(name: str, kind: str, media: Any, stream: Any) -> _Decoded:
    decoded = _Decoded()
    stream.thread_type = "AUTO"
    try:
        for packet in media.demux(stream):
            if packet.size and packet.pts is not None:
                decoded.pts.append(packet.pts)
            for frame in packet.decode():
                if decoded.frames == 0:
                    decoded.rotation = _clockwise_rotation(frame.rotation)
                decoded.frames += 1
    except av.error.FFmpegError as exc:
        raise IngestError(
            f"{name}: decoding failed after {decoded.frames} frames of the {kind} "
            f"file ({exc.strerror}); the file is truncated or damaged, so copy it "
            "again from its source"
        ) from exc

    # Packets arrive in decode order; B-frames make pts jump back, so sort.
    ordered = sorted(set(decoded.pts))
    decoded.intervals = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    return decoded


def _clockwise_rotation(counter_clockwise: float) -> int:
    # PyAV reports the display matrix as a counter-clockwise angle in
    # [-180, 180]; store the clockwise turn that shows the frame upright.
    return int(round(-counter_clockwise / 90.0)) % 4 * 90


def _duration(stream: Any, media: Any, decoded: _Decoded, time_base: Fraction) -> float:
    if stream.duration:
        return float(stream.duration * time_base)
    if decoded.intervals:
        # Matroska keeps no per-stream duration: span of the frames plus one
        # typical interval for the last frame.
        span = max(decoded.pts) - min(decoded.pts)
        return float((span + statistics.median(decoded.intervals)) * time_base)
    if media.duration:
        return media.duration / av.time_base
    return 0.0


def _frame_rate(stream: Any, frames: int, duration_s: float) -> float:
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        return float(rate)
    if duration_s > 0:
        return frames / duration_s
    return 0.0


def _is_variable(intervals: list[int]) -> bool:
    if len(intervals) < 2:
        return False
    median = statistics.median(intervals)
    tolerance = max(1.0, _VFR_TOLERANCE * median)
    return any(abs(interval - median) > tolerance for interval in intervals)


def _extra(
    media: Any, stream: Any, intervals: list[int], time_base: Fraction
) -> dict[str, Any]:
    # Container metadata tags are left out: they can carry names, dates and
    # GPS positions of the recording.
    extra: dict[str, Any] = {
        "demuxer": media.format.name,
        "pixel_format": stream.codec_context.format.name
        if stream.codec_context.format
        else None,
        "profile": stream.profile,
        "bit_rate": media.bit_rate,
        "header_frame_count": stream.frames,
        "time_base": str(time_base),
        "audio_codecs": [audio.codec_context.name for audio in media.streams.audio],
    }
    if intervals:
        extra["min_frame_interval_s"] = float(min(intervals) * time_base)
        extra["max_frame_interval_s"] = float(max(intervals) * time_base)
    return extra
