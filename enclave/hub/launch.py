"""Start the enclave's identity provider and JupyterHub on this machine.

``start_enclave`` writes the provider's configuration and accounts, starts the
provider (Node.js), waits for its discovery document, starts JupyterHub
(which starts configurable-http-proxy and the managed services) and waits
for ``/hub/health``. ``Running.stop`` stops everything again. Logs go to
``STATE_DIR/logs``.

Run by hand with ``python -m enclave.hub.launch --state-dir DIR``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from enclave.config import Settings, load_settings
from enclave.errors import ConfigurationError
from enclave.hub.accounts import Account, demo_accounts, totp_uri, write_accounts_file
from enclave.hub.osusers import ensure_service_user

__all__ = [
    "Running",
    "main",
    "print_logins",
    "start_enclave",
    "wait_for_stop_signal",
]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
HUB_CONFIG_DIR = REPO_ROOT / "hub_config"
PROVIDER_SCRIPT = HUB_CONFIG_DIR / "oidc" / "provider.mjs"
NODE_MODULES = HUB_CONFIG_DIR / "node_modules"
CLIENT_ID = "enclave-hub"
SERVICES = ("broker", "audit", "ethics")


@dataclass
class Running:
    """A started identity provider and hub; a context manager that stops both."""

    hub_url: str
    """Public URL of the hub, e.g. ``http://127.0.0.1:8000``."""
    issuer: str
    """Issuer URL of the OpenID Connect provider."""
    state_dir: Path
    accounts: dict[str, Account]
    """Accounts by user name, with their plain-text passwords and TOTP secrets."""
    client_id: str
    hub_api_port: int
    home_root: Path
    settings: Settings
    """The enclave settings that the hub and its services were started with."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def stop(self) -> None:
        """Stop the hub, its proxy, services and user servers, then the provider."""
        hub = self.processes.pop("hub", None)
        if hub is not None:
            _terminate(hub, "hub", timeout=60)
        _kill_leftover_proxy(self.state_dir / "hub" / "proxy.pid")
        _kill_user_servers(self.hub_api_port)
        provider = self.processes.pop("provider", None)
        if provider is not None:
            _terminate(provider, "identity provider", timeout=10)

    def __enter__(self) -> Running:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate(process: subprocess.Popen[bytes], name: str, *, timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning(
            "%s (pid %d) did not stop within %.0f s; killing it",
            name,
            process.pid,
            timeout,
        )
        process.kill()
        process.wait(timeout=10)
    log.info("stopped %s (pid %d)", name, process.pid)


def _kill_leftover_proxy(pid_file: Path) -> None:
    # The hub stops the proxy it started, unless the hub itself was killed.
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return
    if b"configurable-http-proxy" in cmdline:
        log.warning("proxy (pid %d) outlived the hub; stopping it", pid)
        os.kill(pid, signal.SIGTERM)


def _kill_user_servers(hub_api_port: int) -> None:
    # User servers run in their own sessions, so they survive a hub that was
    # killed. They and their kernels carry the hub's API URL in their
    # environment, which identifies the ones this hub started.
    marker = f"JUPYTERHUB_API_URL=http://127.0.0.1:{hub_api_port}/".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ.split(b"\0")):
            log.warning(
                "process %s of this hub is still running; killing it", entry.name
            )
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)


def _read_or_create_secret(path: Path) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    value = secrets.token_hex(32)
    _write_secret(path, value)
    return value


def _check_node_modules() -> None:
    if shutil.which("node") is None:
        raise ConfigurationError("node is not on PATH: install Node.js 20 or later")
    needed = [
        NODE_MODULES / "oidc-provider" / "package.json",
        NODE_MODULES / ".bin" / "configurable-http-proxy",
    ]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        raise ConfigurationError(
            f"Node packages are missing ({', '.join(missing)}); "
            f"run `npm ci --prefix {HUB_CONFIG_DIR}`"
        )


def _check_traversable(path: Path) -> None:
    # Researchers' servers run the venv's Python as unprivileged users, so
    # every folder above it must be searchable by others (mode o+x).
    for folder in [path, *path.parents]:
        if folder.is_dir() and not folder.stat().st_mode & 0o001:
            raise ConfigurationError(
                f"{folder} is not searchable by other users, so the researchers' "
                f"servers cannot run {path}; run `chmod o+x {folder}`"
            )


def _wait_for_url(
    url: str,
    process: subprocess.Popen[bytes],
    name: str,
    log_file: Path,
    timeout: float,
    interval: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-3000:]
            raise ConfigurationError(
                f"{name} exited with status {process.returncode} while starting; "
                f"end of {log_file}:\n{tail}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(interval)
    raise ConfigurationError(
        f"{name} did not respond at {url} within {timeout:.0f} s; see {log_file}"
    )


PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    # Runs in the child between fork and exec: the kernel sends SIGTERM to
    # the child when the launcher dies, even by SIGKILL, so the provider and
    # the hub (which then stops its proxy, services and servers) never
    # outlive it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _start_process(
    command: list[str], log_file: Path, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    with open(log_file, "ab") as stream:
        return subprocess.Popen(
            command,
            stdout=stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )


def _settings_env(settings: Settings) -> dict[str, str]:
    return {
        "ENCLAVE_HOME": str(settings.home),
        "ENCLAVE_KEY_DIR": str(settings.key_dir),
        "ENCLAVE_RUN_DIR": str(settings.run_dir),
        "ENCLAVE_DB_URL": settings.db_url,
        "ENCLAVE_BROKER_USER": settings.broker_user,
        "ENCLAVE_USER_PREFIX": settings.user_prefix,
    }


def start_enclave(
    settings: Settings,
    *,
    state_dir: Path,
    hub_port: int = 8000,
    idp_port: int = 9443,
    hub_api_port: int | None = None,
    proxy_api_port: int | None = None,
    ethics_port: int | None = None,
    services: bool | Sequence[str] = True,
    accounts: Sequence[Account] | None = None,
    password: str | None = None,
    home_root: Path = Path("/home/enclave"),
    runtime_root: Path = Path("/run/enclave-users"),
    audit_user: str | None = None,
    timeout: float = 120.0,
) -> Running:
    """Start the identity provider and JupyterHub and wait until both respond.

    Parameters
    ----------
    settings
        The enclave's settings; passed to the hub and its services.
    state_dir
        Folder for the provider's keys, the hub's database, secrets and logs.
        Created with mode 0700.
    hub_port, idp_port
        Public port of the hub (the proxy) and port of the provider, both on
        127.0.0.1.
    hub_api_port, proxy_api_port, ethics_port
        The hub's internal port, the proxy's API port and the ethics page's
        port; by default ``hub_port + 1``, ``hub_port + 2`` and ``hub_port + 3``.
    services
        True for the broker, audit and ethics services, False for none, or
        the names.
    accounts
        Accounts of the provider. By default the demo accounts, all with
        ``password`` (or ``ENCLAVE_DEMO_PASSWORD``, or a random password).
    home_root
        Folder of the researchers' home folders.
    runtime_root
        Folder of the users' Jupyter runtime folders, where kernels put their
        ipc sockets; keep it short, because a socket path has at most 107 bytes.
    audit_user
        OS user of the audit collector; by default the broker's OS user, who
        owns the catalog and the audit key.
    timeout
        Seconds to wait for each program to respond.

    Returns
    -------
    Running
        Use as a context manager, or call ``stop()``.

    Raises
    ------
    ConfigurationError
        A program is missing or did not start; the message names the log file.
    """
    _check_node_modules()
    _check_traversable(Path(sys.executable).resolve())
    _check_traversable(REPO_ROOT)
    hub_api_port = hub_api_port or hub_port + 1
    proxy_api_port = proxy_api_port or hub_port + 2
    ethics_port = ethics_port or hub_port + 3
    if services is True:
        service_names: list[str] = list(SERVICES)
    elif services is False:
        service_names = []
    else:
        service_names = list(services)

    audit_user = audit_user or settings.broker_user
    state_dir = Path(state_dir)
    idp_dir = state_dir / "idp"
    hub_dir = state_dir / "hub"
    log_dir = state_dir / "logs"
    for folder in (state_dir, idp_dir, hub_dir, log_dir):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)

    if accounts is None:
        password = (
            password
            or os.environ.get("ENCLAVE_DEMO_PASSWORD")
            or secrets.token_urlsafe(12)
        )
        accounts = demo_accounts(password)
    accounts_file = idp_dir / "accounts.json"
    write_accounts_file(accounts_file, accounts)

    issuer = f"http://127.0.0.1:{idp_port}"
    hub_url = f"http://127.0.0.1:{hub_port}"
    client_secret = secrets.token_urlsafe(32)
    _write_secret(hub_dir / "oidc-client-secret", client_secret)
    provider_config = {
        "issuer": issuer,
        "host": "127.0.0.1",
        "port": idp_port,
        "state_dir": str(idp_dir),
        "accounts_file": str(accounts_file),
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": client_secret,
                "client_name": "Research enclave hub",
                "redirect_uris": [f"{hub_url}/hub/oauth_callback"],
                "post_logout_redirect_uris": [f"{hub_url}/hub/"],
                "first_party": True,
            }
        ],
    }
    _write_secret(idp_dir / "provider.json", json.dumps(provider_config, indent=2))
    crypt_key_file = hub_dir / "crypt.key"
    _read_or_create_secret(crypt_key_file)

    running = Running(
        hub_url=hub_url,
        issuer=issuer,
        state_dir=state_dir,
        accounts={account.username: account for account in accounts},
        client_id=CLIENT_ID,
        hub_api_port=hub_api_port,
        home_root=Path(home_root),
        settings=settings,
    )
    try:
        provider_log = log_dir / "idp.log"
        running.processes["provider"] = _start_process(
            ["node", str(PROVIDER_SCRIPT), "--config", str(idp_dir / "provider.json")],
            provider_log,
            dict(os.environ),
            HUB_CONFIG_DIR / "oidc",
        )
        _wait_for_url(
            f"{issuer}/.well-known/openid-configuration",
            running.processes["provider"],
            "identity provider",
            provider_log,
            timeout,
        )
        log.info("identity provider is up at %s", issuer)

        for name in service_names:
            ensure_service_user(audit_user if name == "audit" else settings.broker_user)
        hub_env = {
            **os.environ,
            **_settings_env(settings),
            "ENCLAVE_HUB_STATE_DIR": str(hub_dir),
            "ENCLAVE_OIDC_ISSUER": issuer,
            "ENCLAVE_OIDC_CLIENT_ID": CLIENT_ID,
            "ENCLAVE_OIDC_CLIENT_SECRET_FILE": str(hub_dir / "oidc-client-secret"),
            "ENCLAVE_HUB_CRYPT_KEY_FILE": str(crypt_key_file),
            "ENCLAVE_HUB_PORT": str(hub_port),
            "ENCLAVE_HUB_API_PORT": str(hub_api_port),
            "ENCLAVE_PROXY_API_PORT": str(proxy_api_port),
            "ENCLAVE_ETHICS_PORT": str(ethics_port),
            "ENCLAVE_HUB_SERVICES": ",".join(service_names),
            "ENCLAVE_HUB_HOME_ROOT": str(home_root),
            "ENCLAVE_HUB_RUNTIME_ROOT": str(runtime_root),
            "ENCLAVE_AUDIT_USER": audit_user,
        }
        hub_log = log_dir / "hub.log"
        running.processes["hub"] = _start_process(
            [
                str(Path(sys.executable).parent / "jupyterhub"),
                "-f",
                str(HUB_CONFIG_DIR / "jupyterhub_config.py"),
            ],
            hub_log,
            hub_env,
            hub_dir,
        )
        # The hub's own port first, then the proxy's, slowly: the proxy
        # returns 404 until the hub has added its route, and logs each 404
        # as an error.
        hub_process = running.processes["hub"]
        _wait_for_url(
            f"http://127.0.0.1:{hub_api_port}/hub/health",
            hub_process,
            "JupyterHub",
            hub_log,
            timeout,
        )
        _wait_for_url(
            f"{hub_url}/hub/health", hub_process, "JupyterHub", hub_log, timeout, 1.0
        )
        log.info("JupyterHub is up at %s", hub_url)
    except BaseException:
        running.stop()
        raise
    return running


def print_logins(running: Running) -> None:
    """Print the hub URL and each account's password and TOTP URI for a demo."""
    print(f"Enclave hub: {running.hub_url}/hub/login")
    print(f"Identity provider: {running.issuer}")
    for account in running.accounts.values():
        groups = ", ".join(account.groups)
        print(f"  {account.username:<8} {account.password}  groups: {groups}")
        if account.totp_secret:
            print(f"           second factor: {totp_uri(account)}")
    print(f"Logs: {running.log_dir}")


def wait_for_stop_signal() -> signal.Signals:
    """Wait for SIGINT or SIGTERM, return it, and ignore both from then on.

    Python runs signal handlers in the main thread, whichever thread the
    signal reached, so this works beside the thread pools of other
    libraries. Later signals are ignored so that a second Ctrl-C or SIGTERM
    does not cut the stop short and leave programs running.
    """
    received: list[int] = []

    def record(signum: int, frame: object) -> None:
        received.append(signum)

    stop_signals = (signal.SIGINT, signal.SIGTERM)
    for signum in stop_signals:
        signal.signal(signum, record)
    while not received:
        # Polling, unlike signal.pause(), cannot miss a signal that arrives
        # between the check and the wait.
        time.sleep(0.2)
    for signum in stop_signals:
        signal.signal(signum, signal.SIG_IGN)
    return signal.Signals(received[0])


def main(argv: list[str] | None = None) -> int:
    """Start the provider and hub with the demo accounts until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m enclave.hub.launch",
        description="Start the enclave's identity provider and JupyterHub on loopback.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="folder for keys, logs and the hub database",
    )
    parser.add_argument(
        "--hub-port",
        type=int,
        default=8000,
        help="public port of the hub (default 8000)",
    )
    parser.add_argument(
        "--idp-port",
        type=int,
        default=9443,
        help="port of the identity provider (default 9443)",
    )
    parser.add_argument(
        "--home-root",
        type=Path,
        default=Path("/home/enclave"),
        help="folder of the researchers' home folders",
    )
    parser.add_argument(
        "--no-services",
        action="store_true",
        help="start the hub without the broker, audit and ethics services",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )

    running = start_enclave(
        load_settings(),
        state_dir=args.state_dir,
        hub_port=args.hub_port,
        idp_port=args.idp_port,
        services=not args.no_services,
        home_root=args.home_root,
    )
    with running:
        print_logins(running)
        received = wait_for_stop_signal()
        log.info("stopping on %s", received.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
