"""The policy of content that a researcher's server does not send to the browser.

Video, DICOM and array files leave the enclave only through the airlock, so
the single-user server does not serve them, neither as files nor inside
kernel outputs or notebooks. A file is blocked when its name ends with a
blocked extension OR its content contains a blocked format anywhere, raw or
encoded as text (see :mod:`enclave_server.payload_scan`), so renaming
``clip.mp4`` to ``clip.txt`` or printing it as base64 does not get it out.
Content larger than the scan limits is blocked without a scan.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from typing import Any

from .formats import SNIFF_BYTES, FileKind, sniff_format
from .payload_scan import Finding, PayloadScanner

__all__ = [
    "DEFAULT_BLOCKED_EXTENSIONS",
    "DEFAULT_BLOCKED_KINDS",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "SNIFF_BYTES",
    "BlockedFile",
    "DownloadPolicy",
    "FileKind",
    "sniff_format",
]

DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest file whose content is scanned and sent. A larger one is blocked."""

DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024
"""Largest kernel message scanned and sent to the browser. A larger one is blocked."""


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
            "array, archive, image and other binary files do not leave the "
            "enclave through the notebook server; request an export through the "
            "airlock instead."
        )


def _reason(finding: Finding) -> str:
    verb = "is" if not finding.encoding else "contains"
    return f"its content {verb} {finding.describe()}"


@dataclass(frozen=True)
class DownloadPolicy:
    """The blocked extensions, file kinds and scan limits of one server.

    Parameters
    ----------
    blocked_extensions
        Name endings, such as ``".mp4"``, compared case-insensitively against
        every component of the path (a ``data.zarr/`` folder blocks its chunks).
    blocked_kinds
        Values of :class:`FileKind` that are blocked wherever they appear in
        content, whatever the file is called.
    max_file_bytes
        Largest file, in bytes, whose content is scanned and sent.
    max_message_bytes
        Largest kernel message, in bytes of its parts, scanned and sent.
    """

    blocked_extensions: tuple[str, ...] = DEFAULT_BLOCKED_EXTENSIONS
    blocked_kinds: tuple[str, ...] = DEFAULT_BLOCKED_KINDS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    scanner: PayloadScanner = field(init=False, repr=False, compare=False)

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
        for name in ("max_file_bytes", "max_message_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"invalid {name} {getattr(self, name)!r}: must be positive"
                )
        scanner = PayloadScanner(FileKind(kind) for kind in self.blocked_kinds)
        object.__setattr__(self, "scanner", scanner)

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

        A file that cannot be read is blocked too, because its content cannot
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
                data = file.read(self.max_file_bytes + 1)
        except OSError as exc:
            return BlockedFile(
                path, f"its content could not be checked ({exc.strerror})"
            )
        return self.check_content(path, data)

    def check_size(self, path: str, size: int) -> BlockedFile | None:
        """Return why a file of ``size`` bytes is blocked without a scan, or None."""
        if size <= self.max_file_bytes:
            return None
        return BlockedFile(
            path,
            f"it is {size} bytes, larger than the {self.max_file_bytes} bytes the "
            "server scans before sending a file",
        )

    def check_content(self, path: str, data: bytes) -> BlockedFile | None:
        """Return why a file with content ``data`` (shown as ``path``) is blocked."""
        too_large = self.check_size(path, len(data))
        if too_large is not None:
            return too_large
        finding = self.scanner.scan_bytes(data)
        return None if finding is None else BlockedFile(path, _reason(finding))

    def check_model(self, path: str, model: dict[str, Any]) -> BlockedFile | None:
        """Return why a contents API model with content is blocked, or None.

        The outputs of a notebook that contain a blocked format are replaced
        in ``model`` by a note, and such attachments of Markdown cells are
        deleted. Neither blocks the notebook. Each one is listed in
        ``model["enclave_removed_outputs"]``, which the caller audits and
        deletes.
        """
        content = model.get("content")
        if content is None or model.get("type") == "directory":
            return None
        if model.get("type") == "notebook":
            return self._check_notebook(path, model)
        if model.get("format") == "base64":
            try:
                data = base64.b64decode(content)
            except (binascii.Error, TypeError, ValueError):
                return BlockedFile(path, "its base64 content could not be decoded")
        else:
            data = str(content).encode("utf-8", "surrogateescape")
        return self.check_content(path, data)

    def _check_notebook(self, path: str, model: dict[str, Any]) -> BlockedFile | None:
        notebook = model["content"]
        removed = []
        for index, cell in enumerate(notebook.get("cells", [])):
            where = f"{path} (cell {index + 1})"
            outputs = cell.get("outputs")
            if isinstance(outputs, list):
                for position, output in enumerate(outputs):
                    finding = self.scanner.scan_json(output)
                    if finding is not None:
                        reason = _reason(finding)
                        outputs[position] = removed_output_note(reason)
                        removed.append(BlockedFile(where, reason))
            # Images pasted into a Markdown cell are kept as attachments.
            attachments = cell.get("attachments")
            if isinstance(attachments, dict):
                for name in list(attachments):
                    finding = self.scanner.scan_json(attachments[name])
                    if finding is not None:
                        del attachments[name]
                        removed.append(BlockedFile(f"{where} {name}", _reason(finding)))
        # The whole notebook is scanned again after the removals. This covers
        # the sources and metadata, and scans the kept outputs a second time.
        finding = self.scanner.scan_json(notebook)
        if finding is not None:
            return BlockedFile(path, _reason(finding))
        model["enclave_removed_outputs"] = removed
        return None

    def check_message(
        self, path: str, parts: list[Any], buffers: list[bytes], size: int
    ) -> BlockedFile | None:
        """Return why a kernel message is not sent to the browser, or None.

        ``parts`` are the decoded header, parent header, metadata and content.
        ``size`` is the length of the message as the kernel sent it.
        """
        if size > self.max_message_bytes:
            return BlockedFile(
                path,
                f"it is {size} bytes, larger than the {self.max_message_bytes} "
                "bytes the server scans before sending a kernel message",
            )
        finding = self.scanner.scan_json(parts)
        for buffer in buffers:
            if finding is not None:
                break
            finding = self.scanner.scan_bytes(buffer)
        return None if finding is None else BlockedFile(path, _reason(finding))


def removed_output_note(reason: str) -> dict[str, Any]:
    """Return the stream output that replaces a removed output and gives the reason."""
    return {
        "output_type": "stream",
        "name": "stderr",
        "text": (
            f"[enclave] This output was removed because {reason}. Video, DICOM, "
            "array, archive, image and other binary data do not leave the enclave "
            "through the notebook server; request an export through the airlock.\n"
        ),
    }
