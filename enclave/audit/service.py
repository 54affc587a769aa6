"""The audit collector: a separate process that appends users' events to the trail.

A researcher's Jupyter server runs as the researcher's OS user, so anything
it writes itself could be rewritten by that user. It posts events over HTTP
on a Unix socket to this process instead, which appends them with
:class:`enclave.audit.AuditLog` to the hash-chained trail that only this
process and the other enclave services can write.

The actor of every event is the hub user of the socket peer's uid, read with
``SO_PEERCRED``, so a payload cannot name its user. A process whose OS user
does not carry the enclave user prefix of the settings is rejected.

Cell executions and blocked downloads are posted only by the Jupyter server.
Its kernels run as the same OS user, but in a user namespace of their own
(see ``enclave_server.kernel_launcher``), so the collector accepts these
actions only from a peer process whose user namespace has the same uid and
gid maps as the collector's own. A kernel that connects to the socket and
posts a ``cell.execute`` event gets HTTP 403, and the attempt is recorded as
``audit.event_rejected``.

What an event does not capture: the outputs of a cell, its variables or the
files it touched. The data a user read is recorded by the broker on its own.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import hashlib
import json
import logging
import os
import pwd
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from sqlalchemy import text

from enclave.audit.log import AuditLog, load_audit_key
from enclave.catalog.db import Catalog
from enclave.config import Settings, load_settings
from enclave.errors import (
    AuditUnavailable,
    ConfigurationError,
    EnclaveError,
    ValidationError,
)

__all__ = [
    "EVENT_SOURCE",
    "MAX_CODE_BYTES",
    "SERVER_ONLY_ACTIONS",
    "EventRejected",
    "PeerCredentials",
    "make_app",
    "outside_own_user_namespace",
    "peer_credentials",
    "serve",
    "validate_event",
]

logger = logging.getLogger(__name__)

EVENT_SOURCE = "jupyter-server"
"""The ``source`` of every record this collector appends."""

MAX_CODE_BYTES = 1024 * 1024
"""Largest cell accepted, in bytes of UTF-8; a larger cell gets HTTP 413."""

_MAX_TEXT_CHARS = 1024
"""Largest identifier, path or reason accepted, in characters."""


RATE_WINDOW_SECONDS = 60.0
MAX_EVENTS_PER_WINDOW = 600
MAX_BYTES_PER_WINDOW = 16 * 1024 * 1024
"""Limits per OS user and rolling minute. More gets HTTP 429, so that a flood from
one user's processes cannot fill the audit database and stop every other user."""


class RateLimiter:
    """Count events and bytes per uid over a rolling window."""

    def __init__(
        self,
        max_events: int = MAX_EVENTS_PER_WINDOW,
        max_bytes: int = MAX_BYTES_PER_WINDOW,
        window: float = RATE_WINDOW_SECONDS,
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.window = window
        self._seen: dict[int, collections.deque[tuple[float, int]]] = {}

    def admit(self, uid: int, size: int, now: float | None = None) -> str | None:
        """Record an event of ``size`` bytes from ``uid``, or return why it is rejected.

        Returns None when the event is within the limits.
        """
        now = time.monotonic() if now is None else now
        seen = self._seen.setdefault(uid, collections.deque())
        while seen and seen[0][0] <= now - self.window:
            seen.popleft()
        used = sum(size for _, size in seen)
        if len(seen) >= self.max_events or used + size > self.max_bytes:
            return (
                f"too many audit events: at most {self.max_events} events and "
                f"{self.max_bytes // (1024 * 1024)} MiB per user in "
                f"{self.window:.0f} s; wait a minute and run the cell again"
            )
        seen.append((now, size))
        return None


@dataclass(frozen=True)
class _Field:
    type: type
    required: bool = True
    nullable: bool = False
    max_chars: int = _MAX_TEXT_CHARS


# The fields of each action. A field not listed here is rejected, so that a
# client cannot smuggle a user name or any other claim into a record.
_EVENT_FIELDS: dict[str, dict[str, _Field]] = {
    "cell.execute": {
        "kernel_id": _Field(str),
        "session_id": _Field(str, nullable=True),
        "cell_id": _Field(str, nullable=True),
        "msg_id": _Field(str),
        "msg_type": _Field(str, required=False),
        "channel": _Field(str, required=False),
        "code": _Field(str, max_chars=MAX_CODE_BYTES),
        "at": _Field(str),
    },
    "download.blocked": {
        "path": _Field(str),
        "route": _Field(str),
        "reason": _Field(str),
        "at": _Field(str),
    },
}
_OUTCOMES = {"cell.execute": "success", "download.blocked": "denied"}

SERVER_ONLY_ACTIONS = frozenset({"cell.execute", "download.blocked"})
"""Actions accepted only from a process in the collector's user namespace."""

REJECTED_ACTION = "audit.event_rejected"
"""Action of the record that notes a server-only event posted from elsewhere."""

# Linux 6.5 and later return a pidfd of the socket's peer for this option.
# Python 3.11 lacks the constant; 77 is its value on x86 and arm64.
_SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)


class EventRejected(Exception):
    """A posted event is invalid; ``status`` is the HTTP status to reply with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PeerCredentials:
    """Process, user and group ids of the process on the other end of a socket."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """Read the kernel-verified credentials of the peer of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def _read_id_maps(pid: int | str) -> tuple[str, str]:
    # Any process may read the id maps of any other, unlike /proc/PID/ns/user.
    maps = []
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", encoding="ascii") as file:
            maps.append(" ".join(file.read().split()))
    return maps[0], maps[1]


@functools.cache
def _own_id_maps() -> tuple[str, str]:
    # The collector never changes its user namespace, so its maps are read once.
    return _read_id_maps("self")


def _has_exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def outside_own_user_namespace(sock: socket.socket, pid: int) -> str | None:
    """Return why the peer ``pid`` of ``sock`` is not in this process's user namespace.

    Returns None when the peer's uid and gid maps, as this process reads them,
    equal its own. The maps of a process in a child user namespace, such as
    an enclave kernel, list only the ids it mapped. Where Linux offers
    ``SO_PEERPIDFD``, a peer that exited before the check is rejected, so
    that the maps of another process that reused its pid are not trusted.
    """
    if pid <= 0:
        return "the peer's pid is not visible in the collector's pid namespace"
    try:
        pidfd: int | None = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
    except OSError:
        # NOTE: before Linux 6.5 the check reads the maps by pid alone, so a
        # peer that exits and whose pid is reused in time is not caught.
        pidfd = None
    try:
        try:
            peer_maps = _read_id_maps(pid)
        except OSError as exc:
            return f"the user namespace of pid {pid} cannot be read ({exc.strerror})"
        if pidfd is not None and _has_exited(pidfd):
            return f"pid {pid} exited before its user namespace was checked"
        if peer_maps != _own_id_maps():
            return (
                f"pid {pid} runs in another user namespace (uid map {peer_maps[0]!r})"
            )
        return None
    finally:
        if pidfd is not None:
            os.close(pidfd)


def validate_event(
    payload: Any, max_code_bytes: int = MAX_CODE_BYTES
) -> dict[str, Any]:
    """Check a decoded event against the schema of its action and return it.

    Raises
    ------
    EventRejected
        With status 400 for a missing, unknown or mistyped field, and 413 for
        code larger than ``max_code_bytes``.
    """
    if not isinstance(payload, dict):
        raise EventRejected(400, "invalid event: expected a JSON object")
    action = payload.get("action")
    fields = _EVENT_FIELDS.get(action) if isinstance(action, str) else None
    if fields is None:
        raise EventRejected(
            400, f"invalid action {action!r}: expected one of {sorted(_EVENT_FIELDS)}"
        )

    unknown = sorted(set(payload) - set(fields) - {"action"})
    if unknown:
        raise EventRejected(
            400, f"unknown fields {unknown} in a {action} event; remove them"
        )
    for name, field in fields.items():
        if name not in payload:
            if field.required:
                raise EventRejected(400, f"missing field {name!r} in a {action} event")
            continue
        value = payload[name]
        if value is None and field.nullable:
            continue
        if not isinstance(value, field.type):
            raise EventRejected(
                400,
                f"invalid field {name!r}: expected {field.type.__name__}, "
                f"got {type(value).__name__}",
            )
        if isinstance(value, str) and not _is_valid_unicode(value):
            raise EventRejected(
                400,
                f"invalid field {name!r}: contains a lone surrogate, not valid Unicode",
            )
        if name != "code" and len(value) > field.max_chars:
            raise EventRejected(
                400, f"invalid field {name!r}: longer than {field.max_chars} characters"
            )

    code = payload.get("code")
    if isinstance(code, str):
        size = len(code.encode("utf-8"))
        if size > max_code_bytes:
            raise EventRejected(
                413,
                f"code of {size} bytes is larger than the limit of {max_code_bytes} "
                "bytes; split the cell",
            )
    return payload


def _is_valid_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _BaseHandler(tornado.web.RequestHandler):
    def write_json(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.write_json(status_code, {"message": self._reason})


class EventsHandler(_BaseHandler):
    """``POST /v1/events``: validate one event and append it to the audit trail."""

    def initialize(self, collector: _Collector) -> None:
        self.collector = collector

    async def post(self) -> None:
        stream = self.request.connection.stream  # type: ignore[union-attr]
        peer = peer_credentials(stream.socket)
        hub_user = self.collector.hub_user_of(peer.uid)
        if hub_user is None:
            logger.warning(
                "rejected an audit event from uid %d (pid %d)", peer.uid, peer.pid
            )
            message = f"uid {peer.uid} is not an enclave user; events are not accepted"
            self.write_json(403, {"message": message})
            return

        rejection = self.collector.rate_limiter.admit(
            peer.uid, len(self.request.body)
        )
        if rejection is not None:
            logger.warning("rejected an audit event from %s: %s", hub_user, rejection)
            self.write_json(429, {"message": rejection})
            return

        try:
            payload = json.loads(self.request.body)
        except ValueError:
            self.write_json(400, {"message": "invalid event: the body is not JSON"})
            return
        try:
            event = validate_event(payload, self.collector.max_code_bytes)
        except EventRejected as exc:
            logger.warning("rejected an audit event from %s: %s", hub_user, exc.message)
            self.write_json(exc.status, {"message": exc.message})
            return

        action = event["action"]
        if action in SERVER_ONLY_ACTIONS:
            problem = outside_own_user_namespace(stream.socket, peer.pid)
            if problem is not None:
                await self._reject_foreign_poster(hub_user, peer, action, problem)
                return

        try:
            record = await self.collector.append(hub_user, peer, event)
        except ValidationError as exc:
            logger.warning("rejected an audit event from %s: %s", hub_user, exc)
            self.write_json(400, {"message": str(exc)})
            return
        except AuditUnavailable as exc:
            logger.error(
                "audit append failed for %s (pid %d): %s", hub_user, peer.pid, exc
            )
            self.write_json(
                503, {"message": f"the audit trail cannot be written: {exc}"}
            )
            return
        self.write_json(201, {"seq": record.seq, "hash": record.chain_hash})

    async def _reject_foreign_poster(
        self, hub_user: str, peer: PeerCredentials, action: str, problem: str
    ) -> None:
        """Reply 403 to a server-only event from another process and record it."""
        logger.warning(
            "rejected a %s event from %s (pid %d): %s",
            action,
            hub_user,
            peer.pid,
            problem,
        )
        try:
            await self.collector.record_rejection(hub_user, peer, action, problem)
        except AuditUnavailable as exc:
            logger.error(
                "the rejected %s event from %s (pid %d) was not recorded: %s",
                action,
                hub_user,
                peer.pid,
                exc,
            )
        message = (
            f"{action} events are accepted only from the Jupyter server, and "
            f"{problem}; code in a kernel cannot post them"
        )
        self.write_json(403, {"message": message})


class HealthHandler(_BaseHandler):
    """``GET /health``: report whether the audit database responds."""

    def initialize(self, collector: _Collector) -> None:
        self.collector = collector

    async def get(self) -> None:
        try:
            await self.collector.check_database()
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
            logger.error("audit database check failed: %s", exc)
            self.write_json(503, {"status": "unavailable", "message": str(exc)})
            return
        self.write_json(200, {"status": "ok"})


class _Collector:
    """State shared by the handlers: the audit log and one thread for appends."""

    def __init__(self, audit_log: Any, settings: Settings, max_code_bytes: int) -> None:
        self.audit_log = audit_log
        self.settings = settings
        self.max_code_bytes = max_code_bytes
        self.rate_limiter = RateLimiter()
        # One thread is enough because the chain head serialises appends
        # anyway. The thread keeps database calls off the event loop.
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="audit-append"
        )

    def hub_user_of(self, uid: int) -> str | None:
        try:
            os_user = pwd.getpwuid(uid).pw_name
        except KeyError:
            return None
        return self.settings.hub_user(os_user) or None

    async def append(
        self, hub_user: str, peer: PeerCredentials, event: dict[str, Any]
    ) -> Any:
        action = event["action"]
        detail = {key: value for key, value in event.items() if key != "action"}
        detail["client_at"] = detail.pop("at")
        if "code" in detail:
            detail["code_sha256"] = hashlib.sha256(
                detail["code"].encode("utf-8")
            ).hexdigest()
        detail["pid"] = peer.pid
        target = (
            event.get("kernel_id") if action == "cell.execute" else event.get("path")
        )

        return await self._append(hub_user, action, _OUTCOMES[action], target, detail)

    async def record_rejection(
        self, hub_user: str, peer: PeerCredentials, action: str, reason: str
    ) -> Any:
        """Append an ``audit.event_rejected`` record of a rejected server-only event."""
        detail = {"pid": peer.pid, "uid": peer.uid, "reason": reason}
        try:
            return await self._append(
                hub_user, REJECTED_ACTION, "denied", action, detail
            )
        except ValidationError as exc:
            raise AuditUnavailable(f"invalid {REJECTED_ACTION} record: {exc}") from exc

    async def _append(
        self,
        hub_user: str,
        action: str,
        outcome: str,
        target: str | None,
        detail: dict[str, Any],
    ) -> Any:
        """Append one record in the database thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self.executor,
                lambda: self.audit_log.append(
                    actor=hub_user,
                    action=action,
                    outcome=outcome,
                    source=EVENT_SOURCE,
                    target=target,
                    detail=detail,
                ),
            )
        except (AuditUnavailable, ValidationError):
            raise
        except Exception as exc:
            # Any other database error is as fatal for the caller. The event is
            # not stored, so the action it records must not happen.
            logger.exception(
                "unexpected error while appending %s for %s", action, hub_user
            )
            raise AuditUnavailable(f"{type(exc).__name__} while appending") from exc

    async def check_database(self) -> None:
        def ping() -> None:
            with self.audit_log.catalog.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        await asyncio.get_running_loop().run_in_executor(self.executor, ping)


def make_app(
    audit_log: Any, settings: Settings, *, max_code_bytes: int = MAX_CODE_BYTES
) -> tornado.web.Application:
    """Build the collector's tornado application around an ``AuditLog``."""
    collector = _Collector(audit_log, settings, max_code_bytes)
    return tornado.web.Application(
        [
            (r"/v1/events", EventsHandler, {"collector": collector}),
            (r"/health", HealthHandler, {"collector": collector}),
        ]
    )


def bind_socket(socket_path: Path) -> socket.socket:
    """Create the collector's listening socket, writable by every local user.

    Raises
    ------
    ConfigurationError
        If the folder or the socket cannot be created, or another process
        already listens on the socket.
    """
    try:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the audit socket folder {socket_path.parent}: "
            f"{exc.strerror}; create it for the collector's OS user or set "
            "ENCLAVE_RUN_DIR"
        ) from exc
    if socket_path.parent.stat().st_mode & 0o005 != 0o005:
        logger.warning(
            "users other than the owner cannot enter %s, so their servers cannot "
            "reach the audit collector",
            socket_path.parent,
        )
    if _is_listening(socket_path):
        raise ConfigurationError(
            f"another process is already listening on {socket_path}; stop the "
            "other audit collector or pass a different socket path"
        )
    # tornado removes a stale socket file, binds and then chmods the path.
    try:
        return tornado.netutil.bind_unix_socket(str(socket_path), mode=0o666)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot listen on the audit socket {socket_path}: {exc}"
        ) from exc


def _is_listening(socket_path: Path) -> bool:
    if not socket_path.is_socket():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(socket_path))
        except OSError:
            return False
    return True


async def _serve_until_stopped(
    settings: Settings, socket_path: Path, max_code_bytes: int
) -> None:
    # Handle the signals before the socket exists, so that a SIGTERM sent as
    # soon as the socket appears stops the collector cleanly.
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)

    audit_log = AuditLog(
        Catalog(settings.db_url), load_audit_key(settings.audit_key_path)
    )
    app = make_app(audit_log, settings, max_code_bytes=max_code_bytes)
    # JSON escapes can make a string six times longer than its UTF-8 bytes.
    server = tornado.httpserver.HTTPServer(
        app, max_body_size=6 * max_code_bytes + 65536
    )
    server.add_sockets([bind_socket(socket_path)])
    logger.info("audit collector listening on %s", socket_path)

    try:
        await stopped.wait()
    finally:
        server.stop()
        await server.close_all_connections()
        socket_path.unlink(missing_ok=True)
        logger.info("audit collector stopped")


def serve(
    settings: Settings,
    socket_path: Path | str | None = None,
    *,
    max_code_bytes: int = MAX_CODE_BYTES,
) -> None:
    """Run the audit collector until SIGTERM or SIGINT.

    Parameters
    ----------
    settings
        The enclave settings: catalog URL, audit key and user prefix.
    socket_path
        Where to listen; defaults to ``settings.audit_socket``. The folder is
        created if missing and the socket is made writable by every user.
    max_code_bytes
        Largest cell accepted, in bytes.
    """
    path = Path(socket_path) if socket_path is not None else settings.audit_socket
    asyncio.run(_serve_until_stopped(settings, path, max_code_bytes))


def main() -> int:
    """Run the collector with the settings of the environment (``python -m``)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        serve(load_settings())
    except EnclaveError as exc:
        logger.error("audit collector not started: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
