"""Check that a container file is as long as its top-level structure declares.

MP4/QuickTime boxes, Matroska's Segment element and AVI's RIFF chunks record
their sizes. A file cut short (an interrupted copy or download) ends before
the last of them does, which is cheaper and more certain to notice here than
by decoding, because FFmpeg decodes a cut Matroska file without an error.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from enclave.errors import IngestError
from enclave.ingest.sniff import CONTAINER_NAMES

__all__ = ["check_container_size"]

_MATROSKA_SEGMENT_ID = 0x18538067


def check_container_size(name: str, file: BinaryIO, size: int, container: str) -> None:
    """Raise IngestError if the top-level structure extends past the end of the file.

    Parameters
    ----------
    name
        File name for the message.
    file
        The file, seekable; its position is changed.
    size
        File size in bytes.
    container
        Short container name: ``mp4``, ``mov``, ``mkv`` or ``avi``.
    """
    if container in ("mp4", "mov"):
        declared = _iso_boxes_end(file, size)
    elif container == "mkv":
        declared = _matroska_segment_end(file)
    elif container == "avi":
        declared = _riff_chunks_end(file, size)
    else:
        return
    if declared is not None and declared > size:
        raise IngestError(
            f"{name}: the {CONTAINER_NAMES[container]} structure declares "
            f"{declared} bytes but the file has {size}; the file is truncated, so "
            "copy it again from its source"
        )


def _iso_boxes_end(file: BinaryIO, size: int) -> int:
    """End offset of the last top-level box (ISO/IEC 14496-12 box headers)."""
    offset = 0
    while offset + 8 <= size:
        file.seek(offset)
        box_size, _box_type = struct.unpack(">I4s", file.read(8))
        if box_size == 1:  # 64-bit size follows the type
            large = file.read(8)
            if len(large) < 8:
                return offset + 16
            box_size = struct.unpack(">Q", large)[0]
        elif box_size == 0:  # the box extends to the end of the file
            return size
        if box_size < 8:
            return offset + 8  # invalid box size: FFmpeg reports the damage
        offset += box_size
    return offset


def _riff_chunks_end(file: BinaryIO, size: int) -> int:
    """End offset of the last top-level RIFF chunk (AVI over 1 GiB has several)."""
    offset = 0
    while offset + 8 <= size:
        file.seek(offset)
        _chunk_id, chunk_size = struct.unpack("<4sI", file.read(8))
        offset += 8 + chunk_size + (chunk_size & 1)
    return offset


def _matroska_segment_end(file: BinaryIO) -> int | None:
    """End offset of the Segment element, or None when its size is unknown (live)."""
    file.seek(0)
    _read_vint(file, keep_marker=True)  # EBML header id
    header_size, _ = _read_vint(file)
    file.seek(file.tell() + header_size)

    segment_id, _ = _read_vint(file, keep_marker=True)
    if segment_id != _MATROSKA_SEGMENT_ID:
        return None
    segment_size, unknown = _read_vint(file)
    if unknown:
        return None
    return file.tell() + segment_size


def _read_vint(file: BinaryIO, *, keep_marker: bool = False) -> tuple[int, bool]:
    """Read an EBML variable-length integer; also return whether it means "unknown"."""
    first = file.read(1)
    if not first:
        return 0, True
    length = 1
    while length <= 8 and not first[0] & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        return 0, True
    rest = file.read(length - 1)
    value = first[0] if keep_marker else first[0] & (0xFF >> length)
    for byte in rest:
        value = (value << 8) | byte
    # All value bits set means "size unknown" (live recordings).
    unknown = not keep_marker and value == (1 << (7 * length)) - 1
    return value, unknown
