"""Researchers' servers run as their own unprivileged OS users."""

from __future__ import annotations

import pwd
import stat
from pathlib import Path

import pytest

from enclave.hub.launch import Running
from tests.fixtures.hub import (
    ServerProcess,
    find_server_process,
    login,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.e2e


def test_server_runs_as_os_user(hub: Running, alice_server: ServerProcess) -> None:
    os_user = hub.settings.os_user("alice")
    entry = pwd.getpwnam(os_user)

    assert alice_server.uid == entry.pw_uid
    assert alice_server.uid != 0
    assert alice_server.environ["USER"] == os_user
    assert alice_server.environ["HOME"] == entry.pw_dir


def test_home_folder_private(hub: Running, alice_server: ServerProcess) -> None:
    home = Path(pwd.getpwnam(hub.settings.os_user("alice")).pw_dir)

    mode = stat.S_IMODE(home.stat().st_mode)
    assert mode == 0o700
    assert home.stat().st_uid == alice_server.uid


def test_server_env_has_sockets_not_secrets(
    hub: Running, alice_server: ServerProcess
) -> None:
    environ = alice_server.environ

    assert "ENCLAVE_BROKER_SOCKET" in environ
    assert "ENCLAVE_AUDIT_SOCKET" in environ
    for private in ("ENCLAVE_KEY_DIR", "ENCLAVE_DB_URL", "ENCLAVE_HOME"):
        assert private not in environ
    assert "JUPYTERHUB_CRYPT_KEY" not in environ
    assert not any("OIDC" in key for key in environ)


def test_root_hub_user_not_uid_0(hub: Running) -> None:
    session = login(hub, "root")
    start_server(hub, session, "root")
    try:
        process = find_server_process(hub, "root")

        assert process.uid != 0
        assert process.uid == pwd.getpwnam(hub.settings.os_user("root")).pw_uid
        assert process.environ["USER"] == hub.settings.os_user("root")
    finally:
        stop_server(hub, session, "root")
