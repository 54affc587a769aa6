"""HTTP handlers of the broker: identity, JSON errors and the routes."""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from tornado import web
from tornado.ioloop import IOLoop

from enclave.broker.identity import peer_credentials, resolve_hub_user
from enclave.broker.manager import OUTCOME_DENIED, DataManager, Requester
from enclave.config import Settings
from enclave.errors import (
    AuditUnavailable,
    EnclaveError,
    NotFound,
    PermissionDenied,
    ValidationError,
)

__all__ = [
    "BaseHandler",
    "DatasetHandler",
    "DatasetsHandler",
    "EnclaveHTTPError",
    "FramesHandler",
    "HealthHandler",
]

log = logging.getLogger(__name__)

# Error class -> (HTTP status, error code in the JSON body). The client maps
# the code back to the same class.
ERROR_STATUS: list[tuple[type[EnclaveError], int, str]] = [
    (ValidationError, 400, "invalid_request"),
    (PermissionDenied, 403, "permission_denied"),
    (NotFound, 404, "not_found"),
    (AuditUnavailable, 503, "audit_unavailable"),
]


class BaseHandler(web.RequestHandler):
    """Identifies the caller from the socket and turns package errors into JSON."""

    audit_action = "data.list"
    """Action recorded when a caller that is not a hub user is rejected."""

    @property
    def manager(self) -> DataManager:
        return self.settings["manager"]

    @property
    def enclave_settings(self) -> Settings:
        return self.settings["enclave_settings"]

    async def run(self, func, *args):  # type: ignore[no-untyped-def]
        """Run a blocking manager call in the decode pool and return its result."""
        return await IOLoop.current().run_in_executor(
            self.settings["executor"], func, *args
        )

    async def requester(self) -> Requester:
        """Identify the hub user behind this connection from SO_PEERCRED.

        Headers are never consulted: only the kernel's record of the
        connecting process counts.
        """
        # HTTP1Connection keeps the IOStream of the accepted socket.
        connection = self.request.connection
        stream = getattr(connection, "stream", None)
        if stream is None or stream.socket is None:
            raise PermissionDenied("the connection has no socket to identify")
        peer = peer_credentials(stream.socket)
        try:
            user = resolve_hub_user(self.enclave_settings, peer.uid)
        except PermissionDenied as exc:
            await self.run(self._record_unknown_peer, peer.uid, peer.pid, str(exc))
            raise
        return Requester(user=user, uid=peer.uid, pid=peer.pid)

    def _record_unknown_peer(self, uid: int, pid: int, reason: str) -> None:
        self.manager.append_audit(
            actor=f"uid:{uid}",
            action=self.audit_action,
            outcome=OUTCOME_DENIED,
            target=self.request.path,
            detail={"reason": reason, "uid": uid, "pid": pid},
        )

    def send_json(self, body: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        code, message = "error", self._reason
        if isinstance(exc, EnclaveHTTPError):
            code, message = exc.code, exc.message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": code, "message": message}))

    def log_exception(self, typ, value, tb):  # type: ignore[no-untyped-def]
        if isinstance(value, EnclaveHTTPError):
            level = logging.ERROR if value.status_code >= 500 else logging.WARNING
            log.log(
                level,
                "%s %s: %s",
                self.request.method,
                self.request.path,
                value.message,
            )
            return
        super().log_exception(typ, value, tb)


class EnclaveHTTPError(web.HTTPError):
    """An HTTP error carrying a package error's code and message to the client."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(status_code)
        self.code = code
        self.message = message


def translate_errors(method):  # type: ignore[no-untyped-def]
    """Turn the package errors raised by a handler method into HTTP errors."""

    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return await method(self, *args, **kwargs)
        except EnclaveError as exc:
            status, code = _error_status(exc)
            raise EnclaveHTTPError(status, code, str(exc)) from exc

    return wrapper


class HealthHandler(BaseHandler):
    """``GET /health``: the broker is up; needs no identity."""

    async def get(self) -> None:
        self.send_json({"status": "ok"})


class DatasetsHandler(BaseHandler):
    """``GET /v1/datasets``: the datasets the caller may read today."""

    @translate_errors
    async def get(self) -> None:
        requester = await self.requester()
        datasets = await self.run(self.manager.list_datasets, requester)
        self.send_json({"user": requester.user, "datasets": datasets})


class DatasetHandler(BaseHandler):
    """``GET /v1/datasets/{name}``: items with their shape and frame times."""

    @translate_errors
    async def get(self, name: str) -> None:
        requester = await self.requester()
        summary = await self.run(self.manager.describe, requester, name)
        self.send_json(summary)


class FramesHandler(BaseHandler):
    """``GET /v1/datasets/{name}/items/{path}/frames?start=&stop=``: raw RGB frames.

    The body is ``n * height * width * 3`` uint8 bytes in C order, with the
    shape in the ``X-Enclave-Shape`` header as ``n,height,width,3``.
    """

    audit_action = "data.read"

    @translate_errors
    async def get(self, name: str, path: str) -> None:
        requester = await self.requester()
        start = self._int_argument("start")
        stop = self._int_argument("stop")

        frames = await self.run(
            self.manager.read_frames, requester, name, path, start, stop
        )

        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("X-Enclave-Shape", ",".join(str(n) for n in frames.shape))
        self.set_header("Cache-Control", "no-store")
        self.finish(frames.tobytes())

    def _int_argument(self, name: str) -> int:
        value = self.get_query_argument(name, None)
        if value is None:
            raise ValidationError(
                f"missing query parameter {name!r}; pass ?start=N&stop=M"
            )
        try:
            return int(value)
        except ValueError:
            raise ValidationError(
                f"query parameter {name}={value!r} is not an integer frame index"
            ) from None


def _error_status(exc: EnclaveError) -> tuple[int, str]:
    for cls, status, code in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "error"
