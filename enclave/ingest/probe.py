"""Probe a file offered for ingest: sniff its container, then read its streams."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os

from enclave.errors import IngestError
from enclave.ingest.dicom import probe_dicom
from enclave.ingest.result import ProbeResult
from enclave.ingest.sniff import HEAD_SIZE, check_extension, sniff_container
from enclave.ingest.structure import check_container_size
from enclave.ingest.video import probe_video

__all__ = ["probe", "probe_bytes"]


def probe(path: str | os.PathLike[str]) -> ProbeResult:
    """Probe a video or DICOM file, decoding all of it to prove it is complete.

    The container is recognised from the file's bytes, and the extension must
    match it: .mp4 or .mov for MP4/QuickTime, .mkv, .avi, and .dcm (or no
    extension) for DICOM.

    Parameters
    ----------
    path
        The file to probe. Error messages name it as given.

    Raises
    ------
    IngestError
        If the file is missing, empty, not video or DICOM, named with the
        wrong extension, truncated or damaged, without a video stream or
        pixel data, or larger than the resolution limits.

    Examples
    --------
    >>> from enclave.samples import carphone_path
    >>> result = probe(carphone_path())
    >>> (result.width, result.height, result.frame_count)
    (176, 144, 120)
    """
    name = str(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            _check_size(name, size)
            head = file.read(HEAD_SIZE)
            container = sniff_container(head)
            check_extension(name, container, head)
            check_container_size(name, file, size, container)  # type: ignore[arg-type]
            file.seek(0)
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except FileNotFoundError:
        raise IngestError(f"{name}: file not found; check the path") from None
    except IsADirectoryError:
        raise IngestError(f"{name}: is a folder, not a file") from None
    except PermissionError:
        raise IngestError(
            f"{name}: permission denied; make the file readable by this user"
        ) from None

    if container == "dicom":
        result = probe_dicom(name, str(path), size)
    else:
        result = probe_video(name, str(path), container, size)  # type: ignore[arg-type]
    return dataclasses.replace(result, sha256=digest)


def probe_bytes(data: bytes, name: str) -> ProbeResult:
    """Probe a file held in memory, such as a derivative before it is stored.

    ``name`` is the file name: its extension must match the content, as in
    :func:`probe`, and error messages use it.
    """
    _check_size(name, len(data))
    head = data[:HEAD_SIZE]
    container = sniff_container(head)
    check_extension(name, container, head)
    check_container_size(name, io.BytesIO(data), len(data), container)  # type: ignore[arg-type]
    if container == "dicom":
        result = probe_dicom(name, io.BytesIO(data), len(data))
    else:
        result = probe_video(name, io.BytesIO(data), container, len(data))  # type: ignore[arg-type]
    return dataclasses.replace(result, sha256=hashlib.sha256(data).hexdigest())


def _check_size(name: str, size: int) -> None:
    if size == 0:
        raise IngestError(f"{name}: the file is empty (0 bytes)")
