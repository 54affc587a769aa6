"""Recognise a media container from its first bytes, not from its file name."""

from __future__ import annotations

from pathlib import PurePath

from enclave.errors import IngestError

__all__ = [
    "ACCEPTED_EXTENSIONS",
    "CONTAINER_NAMES",
    "HEAD_SIZE",
    "check_extension",
    "sniff_container",
]

HEAD_SIZE = 4096
"""Bytes read from the start of a file to recognise its container."""

# Short container name -> the name that error messages use.
CONTAINER_NAMES = {
    "mp4": "MP4 video",
    "mov": "QuickTime (MOV) video",
    "mkv": "Matroska (MKV) video",
    "avi": "AVI video",
    "dicom": "DICOM",
}

# Extension -> containers whose bytes it may hold. MP4 and QuickTime share one
# box structure and FFmpeg demuxer, so either extension is accepted for both.
ACCEPTED_EXTENSIONS = {
    ".mp4": ("mp4", "mov"),
    ".mov": ("mov", "mp4"),
    ".mkv": ("mkv",),
    ".avi": ("avi",),
    ".dcm": ("dicom",),
    "": ("dicom",),
}
_PREFERRED_EXTENSION = {
    "mp4": ".mp4",
    "mov": ".mov",
    "mkv": ".mkv",
    "avi": ".avi",
    "dicom": ".dcm",
}

# Top-level boxes that may open an ISO base media (MP4) or QuickTime file.
_ISO_BOXES = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot", b"uuid"}

# Signatures of common files that are not video, for a clearer rejection.
_OTHER_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"RIFF", "a RIFF file that is not AVI (WAV audio or WebP image)"),
    (b"ID3", "MP3 audio"),
    (b"OggS", "an Ogg file"),
    (b"\x00\x00\x01\xba", "an MPEG program stream"),
]


def sniff_container(head: bytes) -> str | None:
    """Return the short container name of a file from its first bytes.

    Parameters
    ----------
    head
        The first bytes of the file; :data:`HEAD_SIZE` bytes are enough.

    Returns
    -------
    str or None
        One of ``mp4``, ``mov``, ``mkv``, ``avi`` or ``dicom``, or None when
        the bytes match none of these.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML header: Matroska or WebM
        return "mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        # The major brand "qt  " marks QuickTime; other brands are ISO MP4.
        if head[4:8] == b"ftyp" and head[8:12] != b"qt  ":
            return "mp4"
        return "mov"
    return None


def describe_content(head: bytes) -> str:
    """Describe the content of a file that is not an accepted container."""
    for signature, description in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return description
    if len(head) >= 189 and head[0] == 0x47 and head[188] == 0x47:
        return "an MPEG transport stream"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "text"
    return "data of an unknown format"


def check_extension(name: str, container: str | None, head: bytes) -> None:
    """Raise IngestError unless the extension of ``name`` matches the content.

    The message names the file, the extension, what the bytes contain and the
    rename that fixes it.
    """
    path = PurePath(name)
    extension = path.suffix.lower()
    accepted = ", ".join(sorted(e for e in ACCEPTED_EXTENSIONS if e))

    if container is None and extension == ".dcm":
        raise IngestError(
            f"{name}: the file has no DICOM preamble (128 bytes and 'DICM'), so it "
            "is not a DICOM Part 10 file; export it again as a DICOM file"
        )
    if container is None:
        raise IngestError(
            f"{name}: the file contains {describe_content(head)}, not video or "
            f"DICOM; ingest only MP4, MOV, MKV, AVI or DICOM files ({accepted})"
        )
    if extension not in ACCEPTED_EXTENSIONS:
        raise IngestError(
            f"{name}: the extension {extension!r} is not accepted, and the file "
            f"contains {CONTAINER_NAMES[container]}; rename it to "
            f"{path.stem}{_PREFERRED_EXTENSION[container]}"
        )
    if container not in ACCEPTED_EXTENSIONS[extension]:
        expected = CONTAINER_NAMES[ACCEPTED_EXTENSIONS[extension][0]]
        if extension:
            extension_text = f"the extension {extension}"
        else:
            extension_text = "a file without an extension"
        raise IngestError(
            f"{name}: {extension_text} means {expected}, but the file contains "
            f"{CONTAINER_NAMES[container]}; rename it to "
            f"{path.stem}{_PREFERRED_EXTENSION[container]} and ingest it again"
        )
