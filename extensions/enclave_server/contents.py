"""Contents manager and files handler that do not send blocked files.

The checking ``/view/`` and ``/nbconvert/`` handlers go through
:meth:`EnclaveContentsManager.check_download`, which scans the whole file.
``/files/PATH`` reads the file once and sends the bytes it scanned. The
contents API (``GET /api/contents/PATH`` with content) and
everything inside the server that reads a file through the contents manager
(nbconvert, copy) go through :meth:`EnclaveContentsManager.get`, which scans
the model it returns, so the bytes checked are the bytes sent.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import AuthenticatedFileHandler
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web
from traitlets import Instance, default

from enclave.errors import AuditUnavailable

from .audit_client import AuditClient, utc_timestamp
from .download_policy import BlockedFile, DownloadPolicy

__all__ = [
    "BlockingFileHandler",
    "EnclaveContentsManager",
    "forbidden",
    "record_blocked_download",
]

logger = logging.getLogger(__name__)

_SEND_CHUNK_BYTES = 1 << 20
_REMOVED_OUTPUTS_KEY = "enclave_removed_outputs"


def forbidden(message: str) -> web.HTTPError:
    """Return an HTTP 403 error that shows ``message`` on HTML pages and in the API."""
    # The API handlers send log_message as it is, and the page handlers format
    # it with %, so it must not contain a lone % and cannot take arguments.
    return web.HTTPError(403, message.replace("%", "%%"))


async def record_blocked_download(
    client: AuditClient | None, blocked: BlockedFile, route: str
) -> None:
    """Append a ``download.blocked`` event, or log why it could not be appended."""
    if client is None:
        logger.error(
            "Blocked download of %r on %s was not audited: no audit collector is "
            "configured",
            blocked.path,
            route,
        )
        return
    try:
        await client.post_event(
            {
                "action": "download.blocked",
                "path": blocked.path,
                "route": route,
                "reason": blocked.reason,
                "at": utc_timestamp(),
            }
        )
    except AuditUnavailable as exc:
        logger.error("Blocked download of %r was not audited: %s", blocked.path, exc)


class EnclaveContentsManager(AsyncLargeFileManager):
    """The default file contents manager, minus the content of blocked files.

    Listings and metadata of blocked files are still returned, so they show up
    in the file browser. Only their content is rejected with HTTP 403.
    """

    download_policy = Instance(
        DownloadPolicy,
        args=(),
        help="Blocked extensions and file kinds; set by the enclave_server extension.",
    )
    audit_client = Instance(
        AuditClient,
        allow_none=True,
        help="Client of the audit collector; set by the enclave_server extension.",
    )

    @default("files_handler_class")
    def _default_files_handler_class(self) -> type[web.RequestHandler]:
        return BlockingFileHandler

    async def get(
        self,
        path: str,
        content: bool = True,
        type: str | None = None,  # noqa: A002 - the name of the upstream parameter
        format: str | None = None,  # noqa: A002
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Return the model of ``path``, rejecting the content of a blocked file.

        The outputs of a notebook that contain a blocked format are replaced
        by a note, and such attachments are deleted, so that the rest of the
        notebook still opens.
        """
        if not content:
            return await super().get(
                path, content=content, type=type, format=format, **kwargs
            )
        path = path.strip("/")
        os_path = self._get_os_path(path)
        if os.path.isfile(os_path):
            # Checked before reading, so that a video is not read at all.
            policy = self.download_policy
            blocked = policy.check_name(path)
            if blocked is None:
                blocked = policy.check_size(path, os.path.getsize(os_path))
            if blocked is not None:
                await self.reject(blocked, "contents")

        model = await super().get(
            path, content=content, type=type, format=format, **kwargs
        )
        blocked = await asyncio.get_running_loop().run_in_executor(
            None, self.download_policy.check_model, path, model
        )
        if blocked is not None:
            await self.reject(blocked, "contents")
        for removed in model.pop(_REMOVED_OUTPUTS_KEY, []):
            self.log.warning(
                "Removed an output or attachment of %r before sending it: %s",
                removed.path,
                removed.reason,
            )
            await record_blocked_download(self.audit_client, removed, "contents")
        return model

    async def check_download(self, path: str, route: str) -> None:
        """Raise HTTP 403 and audit the refusal if ``path`` must not be downloaded."""
        path = path.strip("/")
        os_path = self._get_os_path(path)
        blocked = await asyncio.get_running_loop().run_in_executor(
            None, self.download_policy.check_file, path, os_path
        )
        if blocked is not None:
            await self.reject(blocked, route)

    async def reject(self, blocked: BlockedFile, route: str) -> None:
        """Audit the rejection of ``blocked`` and raise HTTP 403."""
        self.log.warning(
            "Blocked download of %r on the %s route: %s",
            blocked.path,
            route,
            blocked.reason,
        )
        await record_blocked_download(self.audit_client, blocked, route)
        raise forbidden(blocked.message)


def _read_start(os_path: str, size: int) -> bytes:
    """Return up to ``size`` bytes from the start of the file at ``os_path``."""
    with open(os_path, "rb") as file:
        return file.read(size)


class BlockingFileHandler(AuthenticatedFileHandler):
    """``/files/PATH`` handler that checks the path before serving it."""

    @web.authenticated
    @authorized
    async def head(self, path: str) -> None:  # type: ignore[override]
        """Return the headers of a file that may be downloaded.

        The upstream ``head`` calls :meth:`get` without the body, which checks
        the file.
        """
        await super().head(path)

    @web.authenticated
    @authorized
    async def get(self, path: str, include_body: bool = True) -> None:  # type: ignore[override]
        """Send a file that may be downloaded, after scanning the bytes it sends.

        Checking the path and then letting the static file handler open it
        again would let a cell swap a video in between (a race the check
        would lose), so the bytes sent are the bytes checked.
        """
        manager = self._manager()
        policy = manager.download_policy
        # The name is checked first, so that a video is not read at all.
        blocked = policy.check_name(path.strip("/"))
        if blocked is not None:
            await manager.reject(blocked, "files")
        self.path = self.parse_url_path(path)
        absolute = self.validate_absolute_path(
            self.root, self.get_absolute_path(self.root, self.path)
        )
        if absolute is None:
            return
        # The whole file is read once and scanned, and those bytes are sent,
        # so a cell that rewrites the file meanwhile changes nothing.
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(
                None, _read_start, absolute, policy.max_file_bytes + 1
            )
        except OSError as exc:
            raise web.HTTPError(404) from exc
        blocked = await loop.run_in_executor(
            None, policy.check_content, path.strip("/"), data
        )
        if blocked is not None:
            await manager.reject(blocked, "files")

        content_type = mimetypes.guess_type(absolute)[0]
        self.set_header("Content-Type", content_type or "application/octet-stream")
        self.set_header("Cache-Control", "no-store")
        if self.get_argument("download", None):
            name = os.path.basename(absolute)
            self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        if not include_body:
            return
        for start in range(0, len(data), _SEND_CHUNK_BYTES):
            self.write(data[start : start + _SEND_CHUNK_BYTES])
            await self.flush()

    def compute_etag(self) -> str | None:
        # No ETag: the body is the bytes read and scanned, not what the static
        # file machinery would hash from the path's current content.
        return None

    def _manager(self) -> EnclaveContentsManager:
        manager = self.contents_manager
        if not isinstance(manager, EnclaveContentsManager):
            # Fail closed: without the manager's policy nothing can be checked.
            raise forbidden(
                "Downloads are disabled because the enclave contents manager is not "
                "in use; set ServerApp.contents_manager_class to "
                "enclave_server.contents.EnclaveContentsManager",
            )
        return manager
