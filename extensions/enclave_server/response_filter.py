"""Scan the responses of API routes that send files the user's processes can write.

JupyterLab's workspaces (``/lab/api/workspaces``) and settings
(``/lab/api/settings``) and the server's frontend configuration
(``/api/config``) return the content of JSON files under the user's home
folder. Code in a kernel can write those files, so their responses are
scanned like a download before they are sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar

from tornado import httputil
from tornado.web import OutputTransform

from .audit_client import AuditClient
from .contents import record_blocked_download
from .download_policy import BlockedFile, DownloadPolicy

__all__ = ["SCANNED_API_ROUTES", "make_response_filter"]

logger = logging.getLogger(__name__)

SCANNED_API_ROUTES = ("lab/api/workspaces", "lab/api/settings", "api/config")
"""Routes, after the base URL, whose responses are scanned."""


class _ResponseFilter(OutputTransform):
    """Replace a scanned route's response that contains a blocked format with a 403."""

    policy: ClassVar[DownloadPolicy]
    audit_client: ClassVar[AuditClient | None]
    prefixes: ClassVar[tuple[str, ...]]
    tasks: ClassVar[set[asyncio.Future[None]]]

    def __init__(self, request: httputil.HTTPServerRequest) -> None:
        self.path = request.path
        self.active = any(self.path.startswith(prefix) for prefix in self.prefixes)
        self.blocked = False

    def transform_first_chunk(
        self,
        status_code: int,
        headers: httputil.HTTPHeaders,
        chunk: bytes,
        finishing: bool,
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        if not self.active or status_code >= 300:
            return status_code, headers, chunk
        if finishing:
            blocked = self.policy.check_content(self.path, chunk)
        else:
            # These routes send their body in one piece. A streamed body
            # cannot be scanned whole before its first part leaves.
            blocked = BlockedFile(self.path, "it was sent in parts, not scanned whole")
        if blocked is None:
            return status_code, headers, chunk

        self.blocked = True
        logger.warning("Blocked the response of %s: %s", self.path, blocked.reason)
        task = asyncio.ensure_future(
            record_blocked_download(self.audit_client, blocked, "api")
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        body = json.dumps({"message": blocked.message}).encode()
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(body))
        headers.pop("Etag", None)
        return 403, headers, body

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        return b"" if self.blocked else chunk


def make_response_filter(
    policy: DownloadPolicy, audit_client: AuditClient | None, base_url: str
) -> type[OutputTransform]:
    """Return an output transform that scans the responses of SCANNED_API_ROUTES."""
    base = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
    attributes: dict[str, Any] = {
        "policy": policy,
        "audit_client": audit_client,
        "prefixes": tuple(base + route for route in SCANNED_API_ROUTES),
        "tasks": set(),
    }
    return type("ResponseFilter", (_ResponseFilter,), attributes)
