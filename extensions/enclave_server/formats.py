"""Signatures of the file formats that the download policy recognises.

Each format has magic bytes at fixed offsets from the start of a file
(:data:`_SIGNATURES`, used by :func:`sniff_format`). Most formats also have
a pattern that is searched for anywhere in a payload
(:data:`EMBEDDED_SIGNATURES`), so one harmless byte in front of a file does
not hide it. These patterns are long or specific enough not to turn up by
chance in text.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = [
    "EMBEDDED_SIGNATURES",
    "SNIFF_BYTES",
    "EmbeddedSignature",
    "FileKind",
    "sniff_format",
    "sniff_transport_stream",
]


class FileKind(enum.StrEnum):
    """A family of file formats that the policy blocks or allows as a whole."""

    VIDEO = "video"
    DICOM = "dicom"
    ARRAY = "array"
    ARCHIVE = "archive"
    IMAGE = "image"
    BINARY = "binary"
    """Bytes that are neither text nor a recognised format, such as raw pixels."""


@dataclass(frozen=True)
class _Signature:
    """Magic bytes of one format: every (offset, bytes) pair must match."""

    format: str
    kind: FileKind
    parts: tuple[tuple[int, bytes], ...]

    def matches(self, head: bytes) -> bool:
        return all(
            head[offset : offset + len(magic)] == magic for offset, magic in self.parts
        )


_V, _D, _A, _Z, _I = (
    FileKind.VIDEO,
    FileKind.DICOM,
    FileKind.ARRAY,
    FileKind.ARCHIVE,
    FileKind.IMAGE,
)

# Signatures from the format specifications (ISO/IEC 14496-12 boxes, the EBML
# header, RIFF, ISO/IEC 13818-1 packets, DICOM PS3.10 preamble, the NumPy .npy
# format, the HDF5 superblock, APPNOTE for zip). A QuickTime file may start
# with a moov, mdat, wide, free or skip box instead of ftyp.
_SIGNATURES: tuple[_Signature, ...] = (
    _Signature("MP4/MOV (ISO base media)", _V, ((4, b"ftyp"),)),
    *(_Signature("QuickTime", _V, ((4, box),)) for box in (b"moov", b"mdat", b"wide")),
    _Signature("QuickTime", _V, ((4, b"free"), (12, b"mdat"))),
    _Signature("QuickTime", _V, ((4, b"skip"), (12, b"moov"))),
    _Signature("Matroska/WebM", _V, ((0, b"\x1a\x45\xdf\xa3"),)),
    _Signature("AVI", _V, ((0, b"RIFF"), (8, b"AVI "))),
    _Signature("MPEG transport stream", _V, ((0, b"G"), (188, b"G"), (376, b"G"))),
    _Signature("MPEG program stream", _V, ((0, b"\x00\x00\x01\xba"),)),
    _Signature("MPEG video", _V, ((0, b"\x00\x00\x01\xb3"),)),
    _Signature("FLV", _V, ((0, b"FLV\x01"),)),
    _Signature("ASF/WMV", _V, ((0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),)),
    _Signature("DICOM", _D, ((128, b"DICM"),)),
    _Signature("NumPy array", _A, ((0, b"\x93NUMPY"),)),
    # HDF5 (and NetCDF-4) may carry a user block of 512, 1024, 2048 ... bytes.
    *(
        _Signature("HDF5", _A, ((offset, b"\x89HDF\r\n\x1a\n"),))
        for offset in (0, 512, 1024, 2048)
    ),
    _Signature("NetCDF", _A, ((0, b"CDF\x01"),)),
    _Signature("NetCDF", _A, ((0, b"CDF\x02"),)),
    _Signature("Parquet", _A, ((0, b"PAR1"),)),
    _Signature("Arrow/Feather", _A, ((0, b"ARROW1"),)),
    # Pickle protocols 2 to 5 open with PROTO; torch.save before 1.6 wrote one.
    *(
        _Signature("Python pickle", _A, ((0, b"\x80" + bytes([p])),))
        for p in range(2, 6)
    ),
    # A .npz and a torch.save file (since PyTorch 1.6) are zip archives.
    _Signature("zip (npz, PyTorch)", _Z, ((0, b"PK\x03\x04"),)),
    _Signature("zip (npz, PyTorch)", _Z, ((0, b"PK\x05\x06"),)),
    _Signature("zip (npz, PyTorch)", _Z, ((0, b"PK\x07\x08"),)),
    _Signature("gzip", _Z, ((0, b"\x1f\x8b"),)),
    _Signature("bzip2", _Z, ((0, b"BZh"),)),
    _Signature("xz", _Z, ((0, b"\xfd7zXZ\x00"),)),
    _Signature("Zstandard", _Z, ((0, b"\x28\xb5\x2f\xfd"),)),
    _Signature("7-Zip", _Z, ((0, b"7z\xbc\xaf\x27\x1c"),)),
    _Signature("RAR", _Z, ((0, b"Rar!\x1a\x07"),)),
    _Signature("tar", _Z, ((257, b"ustar"),)),
    _Signature("PNG", _I, ((0, b"\x89PNG\r\n\x1a\n"),)),
    _Signature("JPEG", _I, ((0, b"\xff\xd8\xff"),)),
    _Signature("GIF", _I, ((0, b"GIF8"),)),
    _Signature("TIFF", _I, ((0, b"II*\x00"),)),
    _Signature("TIFF", _I, ((0, b"MM\x00*"),)),
    _Signature("WebP", _I, ((0, b"RIFF"), (8, b"WEBP"))),
    _Signature("JPEG 2000", _I, ((0, b"\x00\x00\x00\x0cjP  \r\n\x87\n"),)),
)

SNIFF_BYTES = 4096
"""How many leading bytes of a file are read to recognise its format."""


@dataclass(frozen=True)
class EmbeddedSignature:
    """A pattern of one format that is searched for anywhere in a payload."""

    format: str
    kind: FileKind
    pattern: re.Pattern[bytes]


def _embedded(format_name: str, kind: FileKind, pattern: bytes) -> EmbeddedSignature:
    return EmbeddedSignature(format_name, kind, re.compile(pattern, re.DOTALL))


# Each pattern is a format's magic plus the bytes that follow it in every
# file of that format (a box size, a version, a header length), so that it
# does not match text or short random data by chance. Sources as above, and
# ITU-T H.264 and H.265 Annex B for raw streams.
EMBEDDED_SIGNATURES: tuple[EmbeddedSignature, ...] = (
    _embedded("MP4/MOV (ISO base media)", _V, rb"\x00\x00[\x00-\x0f][\x08-\xff]ftyp[\x20-\x7e]{4}"),
    _embedded("QuickTime", _V, rb"moov\x00\x00[\x00-\xff]{2}(?:mvhd|cmov|prfl)"),
    _embedded("fragmented MP4", _V, rb"moof\x00\x00\x00[\x00-\xff]mfhd"),
    _embedded("Matroska/WebM", _V, rb"\x1a\x45\xdf\xa3"),
    _embedded("AVI", _V, rb"RIFF.{4}AVI "),
    _embedded("MPEG program stream", _V, rb"\x00\x00\x01\xba[\x20-\x2f\x40-\x7f]"),
    _embedded("MPEG video", _V, rb"\x00\x00\x01\xb3"),
    _embedded("H.264 stream", _V, rb"\x00\x00\x00\x01[\x27\x67][\x42\x4d\x58\x64\x6e\x7a\xf4]"),
    _embedded("H.265 stream", _V, rb"\x00\x00\x00\x01\x40\x01\x0c"),
    _embedded("FLV", _V, rb"FLV\x01[\x01\x04\x05]\x00\x00\x00\x09"),
    _embedded("ASF/WMV", _V, rb"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),
    _embedded("Ogg", _V, rb"OggS\x00[\x00-\x07]"),
    _embedded("YUV4MPEG2", _V, rb"YUV4MPEG2 W\d"),
    _embedded("DICOM", _D, rb"DICM\x02\x00"),
    _embedded("NumPy array", _A, rb"\x93NUMPY[\x01-\x03]\x00"),
    _embedded("HDF5", _A, rb"\x89HDF\r\n\x1a\n"),
    _embedded("NetCDF", _A, rb"CDF[\x01\x02]\x00"),
    _embedded("Parquet", _A, rb"PAR1\x15"),
    _embedded("Arrow/Feather", _A, rb"ARROW1\x00\x00"),
    _embedded("Python pickle", _A, rb"\x80[\x04\x05]\x95.{8}"),
    _embedded("Python pickle", _A, rb"\x80[\x02\x03][c}\]()]"),
    _embedded("MATLAB", _A, rb"MATLAB 5\.0 MAT-file"),
    _embedded("zip (npz, PyTorch)", _Z, rb"PK\x03\x04[\x0a\x14\x2d]\x00"),
    _embedded("zip (npz, PyTorch)", _Z, rb"PK\x01\x02.[\x00-\x3f][\x0a\x14\x2d]\x00"),
    _embedded("zip (npz, PyTorch)", _Z, rb"PK\x05\x06\x00\x00\x00\x00"),
    _embedded("gzip", _Z, rb"\x1f\x8b\x08[\x00-\x1f]"),
    _embedded("bzip2", _Z, rb"BZh[1-9]1AY&SY"),
    _embedded("xz", _Z, rb"\xfd7zXZ\x00"),
    _embedded("Zstandard", _Z, rb"\x28\xb5\x2f\xfd"),
    _embedded("7-Zip", _Z, rb"7z\xbc\xaf\x27\x1c"),
    _embedded("RAR", _Z, rb"Rar!\x1a\x07"),
    _embedded("tar", _Z, rb"ustar(?:\x0000|  \x00)"),
    _embedded("PNG", _I, rb"\x89PNG\r\n\x1a\n"),
    _embedded("JPEG", _I, rb"\xff\xd8\xff[\xc0\xc2\xc4\xdb\xe0-\xef\xfe]"),
    _embedded("GIF", _I, rb"GIF8[79]a"),
    _embedded("TIFF", _I, rb"II\*\x00[\x08-\xff]\x00\x00\x00"),
    _embedded("TIFF", _I, rb"MM\x00\*\x00\x00\x00[\x08-\xff]"),
    _embedded("WebP", _I, rb"RIFF.{4}WEBP"),
    _embedded("BMP", _I, rb"BM.{4}\x00\x00\x00\x00.{4}[\x0c\x28\x38\x40\x6c\x7c]\x00\x00\x00"),
    _embedded("JPEG 2000", _I, rb"\x00\x00\x00\x0cjP  \r\n\x87\n"),
    _embedded("JPEG 2000", _I, rb"\xff\x4f\xff\x51\x00"),
)  # fmt: skip


def sniff_format(
    head: bytes, kinds: Iterable[FileKind] | None = None
) -> _Signature | None:
    """Return the signature that the leading bytes ``head`` match, or None."""
    selected = set(FileKind) if kinds is None else set(kinds)
    for signature in _SIGNATURES:
        if signature.kind in selected and signature.matches(head):
            return signature
    return None


_TS_PACKET_BYTES = 188


def sniff_transport_stream(head: bytes) -> bool:
    """Return True if an MPEG transport stream starts in the first packet of ``head``.

    Four sync bytes 188 bytes apart mark the stream, wherever the first is.
    """
    packets = 4
    last = len(head) - (packets - 1) * _TS_PACKET_BYTES
    for start in range(min(_TS_PACKET_BYTES, max(last, 0))):
        if all(
            head[start + index * _TS_PACKET_BYTES] == 0x47 for index in range(packets)
        ):
            return True
    return False
