"""``enclave broker serve``: start-up checks and the switch to the broker's account."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.broker import (
    DATASET,
    Enclave,
    OsUser,
    copy_enclave,
    create_test_user,
    remove_test_user,
    run_as,
    start_broker,
    stop_broker,
)


@pytest.fixture
def broker_account() -> Iterator[OsUser]:
    user = create_test_user("broker")
    yield user
    remove_test_user(user)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder under /tmp that other accounts can enter, unlike pytest's."""
    folder = Path(tempfile.mkdtemp(prefix="enclave-cli-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_serve_rejects_missing_account(
    enclave_template: Enclave, tmp_path: Path
) -> None:
    enclave = copy_enclave(enclave_template, tmp_path / "enclave")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ENCLAVE_HOME": str(enclave.settings.home),
        "ENCLAVE_KEY_DIR": str(enclave.settings.key_dir),
        "ENCLAVE_RUN_DIR": str(tmp_path / "run"),
        "ENCLAVE_DB_URL": enclave.settings.db_url,
        "ENCLAVE_BROKER_USER": "enclave-no-such-account",
    }
    command = "import sys; from enclave.cli import main; sys.exit(main())"

    result = subprocess.run(
        [sys.executable, "-c", command, "broker", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "OS user 'enclave-no-such-account' does not exist" in result.stderr
    assert "useradd --system enclave-no-such-account" in result.stderr


def test_serve_switches_to_broker_account(
    enclave_template: Enclave,
    open_folder: Path,
    broker_account: OsUser,
    member: OsUser,
) -> None:
    enclave = copy_enclave(enclave_template, open_folder / "enclave")
    for path in [open_folder / "enclave", *(open_folder / "enclave").rglob("*")]:
        os.chown(path, broker_account.uid, broker_account.gid)
    socket_dir = open_folder / "run"

    broker = start_broker(enclave, socket_dir, broker_user=broker_account.os_name)
    try:
        status = Path(f"/proc/{broker.process.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        code = f"""
        from enclave.data import BrokerClient
        result = BrokerClient().read_frames({DATASET!r}, "clips/0001", 0, 2)
        """
        outcome = run_as(member, broker.socket_path, code)
    finally:
        stop_broker(broker)

    assert uid_line.split()[1:] == [str(broker_account.uid)] * 4
    assert outcome.error is None, outcome.message
    assert outcome.result.shape == (2, 144, 176, 3)
    assert outcome.result.dtype == np.uint8
