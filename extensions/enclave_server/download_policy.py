"""The policy of files that a researcher's server does not send to the browser.

Video, DICOM and array files leave the enclave only through the airlock, so
the single-user server does not serve them. A file is blocked when its name
ends with a blocked extension OR its first bytes match the signature of a
blocked format, so renaming ``clip.mp4`` to ``clip.txt`` does not get it out.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BLOCKED_EXTENSIONS",
    "DEFAULT_BLOCKED_KINDS",
    "SNIFF_BYTES",
    "BlockedFile",
    "DownloadPolicy",
    "FileKind",
    "sniff_format",
]


class FileKind(enum.StrEnum):
    """A family of file formats that the policy blocks or allows as a whole."""

    VIDEO = "video"
    DICOM = "dicom"
    ARRAY = "array"
    ARCHIVE = "archive"
    IMAGE = "image"


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

DEFAULT_BLOCKED_KINDS: tuple[str, ...] = tuple(kind.value for kind in FileKind)

DEFAULT_BLOCKED_EXTENSIONS: tuple[str, ...] = (
    # video
    ".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
    ".mts", ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".y4m", ".h264", ".h265",
    ".hevc", ".yuv",
    # DICOM
    ".dcm", ".dicom",
    # arrays and serialised tensors
    ".npy", ".npz", ".h5", ".hdf5", ".hdf", ".zarr", ".nc", ".pt", ".pth",
    ".ckpt", ".safetensors", ".pkl", ".pickle", ".joblib", ".parquet",
    ".feather", ".arrow", ".mat",
    # archives, which can carry any of the above
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar",
    # images, which can carry single frames
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".jp2",
)  # fmt: skip


@dataclass(frozen=True)
class BlockedFile:
    """Why a file is not served: the rule that matched, for the user and the audit."""

    path: str
    reason: str

    @property
    def message(self) -> str:
        return (
            f"Download of {self.path!r} is blocked: {self.reason}. Video, DICOM, "
            "array, archive and image files do not leave the enclave through the "
            "notebook server; request an export through the airlock instead."
        )


def sniff_format(
    head: bytes, kinds: Iterable[FileKind] | None = None
) -> _Signature | None:
    """Return the signature that the leading bytes ``head`` match, or None."""
    selected = set(FileKind) if kinds is None else set(kinds)
    for signature in _SIGNATURES:
        if signature.kind in selected and signature.matches(head):
            return signature
    return None


@dataclass(frozen=True)
class DownloadPolicy:
    """The blocked extensions and file kinds of one server.

    Parameters
    ----------
    blocked_extensions
        Name endings, such as ``".mp4"``, compared case-insensitively against
        every component of the path (a ``data.zarr/`` folder blocks its chunks).
    blocked_kinds
        Values of :class:`FileKind` whose magic bytes are blocked whatever the
        file is called.
    """

    blocked_extensions: tuple[str, ...] = DEFAULT_BLOCKED_EXTENSIONS
    blocked_kinds: tuple[str, ...] = DEFAULT_BLOCKED_KINDS

    def __post_init__(self) -> None:
        extensions = []
        for extension in self.blocked_extensions:
            if not extension.startswith(".") or len(extension) < 2:
                raise ValueError(
                    f"invalid blocked extension {extension!r}: write it with its "
                    "leading dot, such as '.mp4'"
                )
            extensions.append(extension.lower())
        object.__setattr__(self, "blocked_extensions", tuple(extensions))

        known = {kind.value for kind in FileKind}
        for kind in self.blocked_kinds:
            if kind not in known:
                raise ValueError(
                    f"invalid blocked file kind {kind!r}: use one of {sorted(known)}"
                )

    def check_name(self, path: str) -> BlockedFile | None:
        """Return why ``path`` is blocked by its name alone, or None."""
        for component in path.replace("\\", "/").split("/"):
            lowered = component.lower()
            for extension in self.blocked_extensions:
                if lowered.endswith(extension):
                    return BlockedFile(path, f"files ending in {extension} are blocked")
        return None

    def check_file(self, path: str, os_path: str) -> BlockedFile | None:
        """Return why the file at ``os_path`` (shown as ``path``) is blocked, or None.

        A file that cannot be read is blocked too, because its format cannot
        be checked.
        """
        # A folder listing sends names only; its files are checked one by one.
        if os.path.isdir(os_path):
            return None
        by_name = self.check_name(path)
        if by_name is not None:
            return by_name
        if not os.path.isfile(os_path):
            return None

        try:
            with open(os_path, "rb") as file:
                head = file.read(SNIFF_BYTES)
        except OSError as exc:
            return BlockedFile(
                path, f"its format could not be checked ({exc.strerror})"
            )
        return self.check_content(path, head)

    def check_content(self, path: str, head: bytes) -> BlockedFile | None:
        """Return why a file starting with ``head`` (shown as ``path``) is blocked."""
        signature = sniff_format(head, (FileKind(kind) for kind in self.blocked_kinds))
        if signature is None:
            return None
        return BlockedFile(
            path, f"its content is {signature.format} ({signature.kind.value})"
        )
