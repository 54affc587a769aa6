"""The hub starts the broker, the audit collector and the ethics page as the
broker's OS user."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.config import Settings
from enclave.hub.launch import Running
from tests.fixtures.hub import (
    login,
    open_server,
    open_service,
    run_code,
    running_test_hub,
    start_server,
    unique_user_prefix,
)

pytestmark = pytest.mark.e2e


def service_processes(running: Running) -> dict[str, int]:
    """Map each service of ``running``'s hub to the uid of its process."""
    marker = f"JUPYTERHUB_API_URL=http://127.0.0.1:{running.hub_api_port}/hub/api"
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            uid = entry.stat().st_uid
        except OSError:
            continue
        if marker.encode() not in environ:
            continue
        for item in environ:
            if item.startswith(b"JUPYTERHUB_SERVICE_NAME="):
                found[item.split(b"=", 1)[1].decode()] = uid
    return found


@pytest.fixture(scope="module")
def services_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    base = Path(tempfile.mkdtemp(prefix="enclave-services-test-"))
    base.chmod(0o711)
    settings = Settings(
        home=base / "home",
        key_dir=base / "keys",
        run_dir=base / "run",
        db_url=f"sqlite:///{base / 'home' / 'catalog.sqlite'}",
        user_prefix=unique_user_prefix(),
    )
    env = {
        **os.environ,
        "ENCLAVE_HOME": str(settings.home),
        "ENCLAVE_KEY_DIR": str(settings.key_dir),
        "ENCLAVE_RUN_DIR": str(settings.run_dir),
        "ENCLAVE_DB_URL": settings.db_url,
        "ENCLAVE_USER_PREFIX": settings.user_prefix,
    }
    enclave = Path(sys.executable).parent / "enclave"
    subprocess.run([str(enclave), "init"], env=env, check=True, capture_output=True)
    try:
        with running_test_hub(
            settings,
            tmp_path_factory.mktemp("services-hub-state"),
            services=["broker", "audit", "ethics"],
        ) as running:
            deadline = time.monotonic() + 60
            sockets = (settings.broker_socket, settings.audit_socket)
            while not all(path.exists() for path in sockets):
                assert time.monotonic() < deadline, "service sockets did not appear"
                time.sleep(0.2)
            yield running
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_services_run_as_broker_user(services_hub: Running) -> None:
    broker_uid = pwd.getpwnam(services_hub.settings.broker_user).pw_uid

    processes = service_processes(services_hub)

    assert processes.get("broker") == broker_uid
    assert processes.get("audit") == broker_uid
    assert processes.get("ethics") == broker_uid


def test_ethics_page_behind_hub_login(services_hub: Running) -> None:
    session = login(services_hub, "carol")

    response = open_service(services_hub, session, "ethics")

    assert response.status_code == 200
    assert response.url.startswith(f"{services_hub.hub_url}/services/ethics/")


def test_kernel_runs_as_researcher(services_hub: Running) -> None:
    session = login(services_hub, "alice")
    start_server(services_hub, session, "alice")
    assert open_server(services_hub, session, "alice").status_code == 200

    reply = run_code(
        services_hub,
        session,
        "alice",
        "import os; print(os.getuid(), os.environ['JUPYTER_RUNTIME_DIR'])",
    )

    entry = pwd.getpwnam(services_hub.settings.os_user("alice"))
    assert reply["status"] == "ok", reply
    uid, runtime_dir = reply["stdout"].split()
    assert int(uid) == entry.pw_uid
    assert runtime_dir.endswith(f"/{entry.pw_uid}")
