"""A real Jupyter server with the enclave_server extension, run as an enclave OS user.

The module-scoped ``enclave_server`` fixture first starts an audit collector
as root, over a fresh SQLite catalog and audit key. It then creates an OS
user ``enc-t…`` and runs ``python -m jupyter_server`` as that user on
127.0.0.1, with the extension enabled and a folder of sample files as root.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from enclave import samples
from enclave.audit import AuditLog, create_audit_key, load_audit_key
from enclave.catalog.db import Catalog
from enclave.config import Settings
from tests.extension.kernel_client import KernelClient
from tests.extension.support import (
    REPO_ROOT,
    Collector,
    OSUser,
    os_user,
    python_for,
    shared_folder,
)

SERVER_START_TIMEOUT_S = 90


@dataclass
class EnclaveServer:
    """The running pieces of one test module."""

    base_url: str
    token: str
    user: OSUser
    hub_user: str
    root_dir: Path
    log_path: Path
    collector: Collector
    audit_log: AuditLog

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(
            self.base_url + path,
            headers={"Authorization": f"token {self.token}"},
            timeout=60,
            **kwargs,  # type: ignore[arg-type]
        )

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(
            self.base_url + path,
            headers={"Authorization": f"token {self.token}"},
            data=json.dumps(body),
            timeout=60,
        )

    def put(self, path: str, body: dict) -> requests.Response:
        return requests.put(
            self.base_url + path,
            headers={"Authorization": f"token {self.token}"},
            data=json.dumps(body),
            timeout=60,
        )

    def start_kernel(self) -> str:
        response = self.post("/api/kernels", {"name": "enclave-python"})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_sample_files(root: Path) -> None:
    carphone = samples.carphone_path()
    shutil.copyfile(carphone, root / "clip.mp4")
    # The same MP4 under a name that the extension list does not block.
    shutil.copyfile(carphone, root / "clip.txt")
    np.save(root / "frames.npy", np.zeros((4, 8, 8), dtype=np.uint8))
    shutil.copyfile(root / "frames.npy", root / "frames.dat")
    (root / "table.csv").write_text("frame,mean\n0,1.5\n1,2.5\n")
    notebook = {
        "cells": [
            {
                "cell_type": "markdown",
                "id": "intro",
                "metadata": {},
                "source": ["# Results"],
            }
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / "results.ipynb").write_text(json.dumps(notebook))


def _wait_for_server(
    base_url: str, token: str, process: subprocess.Popen, log: Path
) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"jupyter server exited:\n{log.read_text()}")
        try:
            response = requests.get(
                f"{base_url}/api/status",
                headers={"Authorization": f"token {token}"},
                timeout=5,
            )
            if response.status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"jupyter server did not start:\n{log.read_text()}")


@pytest.fixture(scope="module")
def enclave_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnclaveServer]:
    state = tmp_path_factory.mktemp("enclave")
    with shared_folder() as shared, os_user("enc-t") as user:
        settings = Settings(
            home=state / "home",
            key_dir=state / "keys",
            run_dir=shared / "run",
            db_url=f"sqlite:///{state / 'catalog.sqlite'}",
        )
        settings.home.mkdir()
        settings.key_dir.mkdir(mode=0o700)
        catalog = Catalog(settings.db_url)
        catalog.upgrade()
        create_audit_key(settings.audit_key_path)
        audit_log = AuditLog(catalog, load_audit_key(settings.audit_key_path))

        collector_env = {
            **os.environ,
            "ENCLAVE_HOME": str(settings.home),
            "ENCLAVE_KEY_DIR": str(settings.key_dir),
            "ENCLAVE_DB_URL": settings.db_url,
        }
        collector = Collector(collector_env, settings.run_dir)
        collector.start()

        root_dir = shared / "work"
        root_dir.mkdir()
        _write_sample_files(root_dir)
        runtime_dir = shared / "rt"
        runtime_dir.mkdir(mode=0o700)
        for path in (root_dir, runtime_dir, *root_dir.iterdir()):
            os.chown(path, user.uid, user.gid)

        python, extra_env = python_for(user)
        port = _free_port()
        token = secrets.token_hex(16)
        base_url = f"http://127.0.0.1:{port}"
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(user.home),
            "USER": user.name,
            "LANG": "C.UTF-8",
            "JUPYTER_RUNTIME_DIR": str(runtime_dir),
            "JUPYTER_CONFIG_DIR": str(user.home / ".jupyter"),
            "JUPYTER_DATA_DIR": str(user.home / ".local/share/jupyter"),
            # The repository's kernels/ folder contains the enclave-python spec.
            "JUPYTER_PATH": str(REPO_ROOT),
            "ENCLAVE_AUDIT_SOCKET": str(collector.socket_path),
            **extra_env,
        }
        command = [
            python,
            "-m",
            "jupyter_server",
            "--ServerApp.jpserver_extensions=enclave_server=True",
            "--ServerApp.reraise_server_extension_failures=True",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={root_dir}",
            f"--IdentityProvider.token={token}",
            "--EnclaveServerApp.audit_timeout=3",
            "--EnclaveServerApp.max_code_size=65536",
        ]
        log_path = shared / "server.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=root_dir,
                user=user.uid,
                group=user.gid,
                extra_groups=[],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_server(base_url, token, process, log_path)
            yield EnclaveServer(
                base_url=base_url,
                token=token,
                user=user,
                hub_user=settings.hub_user(user.name) or "",
                root_dir=root_dir,
                log_path=log_path,
                collector=collector,
                audit_log=audit_log,
            )
        finally:
            _stop(process)
            collector.stop()
            catalog.dispose()


@pytest.fixture(scope="module")
def kernel_id(enclave_server: EnclaveServer) -> str:
    """ID of one kernel shared by the tests of a module."""
    return enclave_server.start_kernel()


@pytest.fixture(params=["v1", "legacy"])
def client(
    request: pytest.FixtureRequest, enclave_server: EnclaveServer, kernel_id: str
) -> Iterator[KernelClient]:
    """Client of the module's kernel, once per websocket protocol."""
    client = KernelClient(
        enclave_server.base_url, enclave_server.token, kernel_id, request.param
    )
    yield client
    client.close()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
