"""The broker's tornado application and its process life cycle."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tornado import httpserver, ioloop, netutil, web

from enclave.broker.handlers import (
    DatasetHandler,
    DatasetsHandler,
    FramesHandler,
    HealthHandler,
)
from enclave.broker.manager import DataManager
from enclave.config import Settings
from enclave.errors import ConfigurationError

__all__ = ["bind_socket", "drop_privileges", "make_app", "run_broker"]

log = logging.getLogger(__name__)

# Any local user may connect: the broker identifies each caller from the
# socket's peer credentials and rejects accounts that are not hub users.
SOCKET_MODE = 0o666
SOCKET_DIR_MODE = 0o755


def make_app(
    settings: Settings, manager: DataManager, executor: ThreadPoolExecutor
) -> web.Application:
    """Build the tornado application with its four routes."""
    name = r"(?P<name>[^/]+)"
    return web.Application(
        [
            (r"/health", HealthHandler),
            (r"/v1/datasets", DatasetsHandler),
            (rf"/v1/datasets/{name}", DatasetHandler),
            (rf"/v1/datasets/{name}/items/(?P<path>.+)/frames", FramesHandler),
        ],
        manager=manager,
        enclave_settings=settings,
        executor=executor,
        log_function=_log_request,
    )


def bind_socket(path: Path) -> socket.socket:
    """Create the listening Unix socket (mode 0666) in a folder of mode 0755.

    A folder that belongs to another account keeps its mode; if others
    cannot enter it, researchers cannot connect, which is logged.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_uid == os.geteuid():
        os.chmod(folder, SOCKET_DIR_MODE)
    elif not folder.stat().st_mode & stat.S_IXOTH:
        log.warning(
            "socket folder %s is not open to other users (mode %o), so "
            "researchers cannot reach the broker; run 'chmod 755 %s'",
            folder,
            stat.S_IMODE(folder.stat().st_mode),
            folder,
        )
    return netutil.bind_unix_socket(str(path), mode=SOCKET_MODE)


def drop_privileges(user: str) -> None:
    """Switch this root process to the OS user ``user`` and its groups.

    Raises
    ------
    ConfigurationError
        If the account does not exist.
    """
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise ConfigurationError(
            f"OS user {user!r} does not exist; create it with "
            f"'useradd --system {user}' or set ENCLAVE_BROKER_USER"
        ) from None
    os.initgroups(user, account.pw_gid)
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    log.info("running as %s (uid %d)", user, account.pw_uid)


async def run_broker(
    settings: Settings, manager: DataManager, sock: socket.socket
) -> None:
    """Serve on the bound socket ``sock`` until SIGTERM or SIGINT."""
    executor = ThreadPoolExecutor(
        max_workers=manager.config.decode_threads, thread_name_prefix="broker-decode"
    )
    app = make_app(settings, manager, executor)
    server = httpserver.HTTPServer(app)
    server.add_socket(sock)
    log.info("broker listening on %s", manager.config.socket_path)

    async def evict_destroyed() -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(
                executor, manager.evict_destroyed
            )
        except Exception:
            # The next check retries; requests check data keys regardless.
            log.exception("check for destroyed assets failed")

    checker = ioloop.PeriodicCallback(
        evict_destroyed, 1000 * manager.config.destroyed_check_interval_s
    )
    checker.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info("broker stopping")
    checker.stop()
    server.stop()
    await server.close_all_connections()
    executor.shutdown(wait=True, cancel_futures=True)
    try:
        manager.config.socket_path.unlink()
    except OSError as exc:
        # The socket was created before dropping privileges, so it may
        # belong to root; a stale socket is replaced at the next start.
        log.warning("could not remove %s: %s", manager.config.socket_path, exc)


def _log_request(handler: web.RequestHandler) -> None:
    # One line per request, without the query string's frame range: the
    # audit trail records reads, this log only records service health.
    # Rejected requests were already logged with their reason by the handler.
    status = handler.get_status()
    level = logging.ERROR if status >= 500 else logging.DEBUG
    log.log(
        level,
        "%d %s %s %.1f ms",
        status,
        handler.request.method,
        handler.request.path,
        1000.0 * handler.request.request_time(),
    )
