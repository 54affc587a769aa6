"""A real broker process over a real catalog and vault, and real test OS users.

The enclave is built once per session in a folder only root can enter. Its
broker runs as a separate process on a socket in a folder that every user
can reach, and clients run as throwaway OS users ``enc-<random>`` so that
the broker sees a real, different uid through SO_PEERCRED.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from enclave import samples
from enclave.audit import AuditLog, create_audit_key, load_audit_key
from enclave.catalog.db import Catalog
from enclave.catalog.models import (
    Asset,
    AssetKind,
    Category,
    DataKey,
    Dataset,
    DatasetItem,
    MediaType,
    Project,
    ProjectStatus,
)
from enclave.config import Settings
from enclave.data import BrokerClient
from enclave.errors import EnclaveError
from enclave.projects import approve_project, create_project, submit_project
from enclave.vault import KeyRing, Vault

REPO_ROOT = Path(__file__).resolve().parents[2]

DATASET = "carphone-study"
"""Dataset of the current project: a carphone derivative and an ultrasound loop."""
ARCHIVE_DATASET = "carphone-archive"
"""Dataset granted only to a project whose end date has passed."""
CURRENT_PROJECT = "carphone-current"
ENDED_PROJECT = "carphone-ended"
REVIEWERS = ("rita", "rolf", "ruth")

BROKER_START_TIMEOUT_S = 60
CHILD_TIMEOUT_S = 180


@dataclass(frozen=True)
class OsUser:
    """An OS account ``enc-<random>`` and the hub user name it maps to."""

    os_name: str
    hub_name: str
    uid: int
    gid: int
    home: Path


@dataclass
class Enclave:
    """Settings and open handles of a test installation."""

    settings: Settings
    catalog: Catalog
    vault: Vault
    audit: AuditLog

    def plaintext(self, dataset: str, path: str) -> bytes:
        """Decrypt an item's derivative here, in the test process, for comparison."""
        with self.catalog.session() as session:
            item = session.scalars(
                select(DatasetItem)
                .join(Dataset)
                .where(Dataset.name == dataset, DatasetItem.path == path)
            ).one()
            key = item.asset.data_key
            return self.vault.read_bytes(
                item.asset.blob_id, key.master_key_id, key.wrapped_key
            )


@dataclass
class RunningBroker:
    """A broker process serving an :class:`Enclave` on ``socket_path``."""

    enclave: Enclave
    socket_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def create_test_user(tag: str) -> OsUser:
    name = f"enc-{tag}{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam(name)
    return OsUser(
        name, name.removeprefix("enc-"), entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)
    )


def remove_test_user(user: OsUser) -> None:
    # Every process of the user was a child of a test and has been reaped.
    subprocess.run(
        ["userdel", "--remove", user.os_name], capture_output=True, check=False
    )


def make_settings(root: Path) -> Settings:
    home, key_dir = root / "home", root / "keys"
    for folder in (root, home, key_dir):
        folder.mkdir(mode=0o700, exist_ok=True)
    return Settings(
        home=home,
        key_dir=key_dir,
        run_dir=root / "run",
        db_url=f"sqlite:///{home / 'catalog.sqlite'}",
    )


def open_enclave(settings: Settings) -> Enclave:
    catalog = Catalog(settings.db_url)
    keyring = KeyRing.load(settings.master_key_path)
    audit = AuditLog(catalog, load_audit_key(settings.audit_key_path))
    return Enclave(settings, catalog, Vault(settings.vault_dir, keyring), audit)


def build_enclave(root: Path, member: str) -> Enclave:
    """Create keys, catalog, the two datasets and the two projects of ``member``."""
    settings = make_settings(root)
    KeyRing.create(settings.master_key_path)
    create_audit_key(settings.audit_key_path)
    Catalog(settings.db_url).upgrade()
    enclave = open_enclave(settings)

    carphone = _store_derivative(enclave, samples.carphone_path(), MediaType.VIDEO)
    ultrasound = _store_derivative(
        enclave, samples.ultrasound_dicom_path(), MediaType.DICOM
    )
    _publish(enclave, DATASET, {"clips/0001": carphone, "loops/0001": ultrasound})
    _publish(enclave, ARCHIVE_DATASET, {"clips/0001": carphone})

    today = dt.date.today()
    _approved_project(
        enclave, CURRENT_PROJECT, member, DATASET, today, today + dt.timedelta(days=30)
    )
    _approved_project(
        enclave,
        ENDED_PROJECT,
        member,
        ARCHIVE_DATASET,
        today,
        today + dt.timedelta(days=30),
    )
    # The ended project ran last month: move its dates into the past, as the
    # calendar would have.
    with enclave.catalog.session() as session:
        project = session.scalars(
            select(Project).where(Project.name == ENDED_PROJECT)
        ).one()
        project.starts_on = today - dt.timedelta(days=40)
        project.ends_on = today - dt.timedelta(days=10)
    return enclave


def _store_derivative(enclave: Enclave, path: Path, media_type: MediaType) -> str:
    # TODO: build the derivative with enclave.deid.derive once it lands; the
    # sample is stored as it is until then.
    stored = enclave.vault.write(path)
    import decord

    if media_type is MediaType.VIDEO:
        reader = decord.VideoReader(str(path))
        height, width = reader[0].shape[:2]
        frame_count, fps = len(reader), reader.get_avg_fps()
    else:
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True)
        height, width = int(header.Rows), int(header.Columns)
        frame_count, fps = int(header.NumberOfFrames), 1000.0 / float(header.FrameTime)
    with enclave.catalog.session() as session:
        asset = Asset(
            kind=AssetKind.DERIVATIVE,
            media_type=media_type,
            category=Category.TEACHING,
            level=3,
            original_name=path.name,
            container=path.suffix.lstrip("."),
            video_codec="h264" if media_type is MediaType.VIDEO else "jpeg",
            width=width,
            height=height,
            fps=fps,
            duration_s=frame_count / fps,
            frame_count=frame_count,
            blob_id=stored.blob_id,
            plaintext_size=stored.plaintext_size,
            plaintext_sha256=stored.plaintext_sha256,
            chunk_size=stored.chunk_size,
            profile="baseline",
            created_by="erin",
        )
        session.add(asset)
        session.flush()
        session.add(
            DataKey(
                asset_id=asset.id,
                master_key_id=stored.master_key_id,
                wrapped_key=stored.wrapped_key,
            )
        )
        return asset.id


def _publish(enclave: Enclave, name: str, items: dict[str, str]) -> None:
    with enclave.catalog.session() as session:
        dataset = Dataset(
            name=name,
            category=Category.TEACHING,
            level=3,
            profile="baseline",
            created_by="erin",
        )
        session.add(dataset)
        session.flush()
        for path, asset_id in items.items():
            session.add(
                DatasetItem(dataset_id=dataset.id, asset_id=asset_id, path=path)
            )


def _approved_project(
    enclave: Enclave,
    name: str,
    member: str,
    dataset: str,
    starts_on: dt.date,
    ends_on: dt.date,
) -> None:
    audit = enclave.audit
    with enclave.catalog.session(immediate=True) as session:
        create_project(
            session,
            name=name,
            title=f"Test project {name}",
            purpose="research",
            pi=member,
            members=[member],
            datasets=[dataset],
            starts_on=starts_on,
            ends_on=ends_on,
            created_by=member,
            audit=audit,
        )
    with enclave.catalog.session(immediate=True) as session:
        submit_project(session, name, member, audit=audit)
    for reviewer in REVIEWERS:
        with enclave.catalog.session(immediate=True) as session:
            project = approve_project(session, name, reviewer, audit=audit)
            if project.status == ProjectStatus.APPROVED:
                return
    raise AssertionError(f"project {name} was not approved by {REVIEWERS}")


def copy_enclave(source: Enclave, root: Path) -> Enclave:
    """Copy an installation's data and key folders into ``root``."""
    source.catalog.dispose()
    root.mkdir(mode=0o700)
    shutil.copytree(source.settings.home, root / "home")
    shutil.copytree(source.settings.key_dir, root / "keys")
    return open_enclave(make_settings(root))


def start_broker(enclave: Enclave, socket_dir: Path) -> RunningBroker:
    """Run ``enclave broker serve`` for ``enclave`` and wait until it answers."""
    socket_path = socket_dir / "broker.sock"
    log_path = enclave.settings.home.parent / "broker.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ENCLAVE_HOME": str(enclave.settings.home),
        "ENCLAVE_KEY_DIR": str(enclave.settings.key_dir),
        "ENCLAVE_RUN_DIR": str(socket_dir),
        "ENCLAVE_DB_URL": enclave.settings.db_url,
    }
    command = [
        sys.executable,
        "-c",
        "import sys; from enclave.cli import main; sys.exit(main())",
        "--log-level",
        "INFO",
        "broker",
        "serve",
        "--socket",
        str(socket_path),
        "--run-as-root",
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    broker = RunningBroker(enclave, socket_path, process, log_path)

    deadline = time.monotonic() + BROKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"broker exited with {process.returncode}:\n{broker.log_tail()}"
            )
        if socket_path.exists():
            try:
                BrokerClient(socket_path, timeout=5).health()
                return broker
            except EnclaveError:
                pass
        time.sleep(0.1)
    stop_broker(broker)
    raise AssertionError(f"broker did not answer within {BROKER_START_TIMEOUT_S} s")


def stop_broker(broker: RunningBroker) -> None:
    broker.process.terminate()
    try:
        broker.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        broker.process.kill()
        broker.process.wait()


# Runs in the child as the test user. The snippet sets `result`; arrays
# travel as base64 .npy, and an exception travels as its class and message.
_CHILD_PROLOGUE = """
import base64, io, json, sys, traceback
import numpy as np

def _encode(value):
    if isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, value)
        return {"__npy__": base64.b64encode(buffer.getvalue()).decode()}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value

try:
    result = None
@@BODY@@
    payload = {"result": _encode(result)}
except Exception as exc:
    payload = {"error": type(exc).__name__, "message": str(exc),
               "traceback": traceback.format_exc()}
sys.stdout.write("\\n@@RESULT@@" + json.dumps(payload))
"""


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__npy__" in value:
        return np.load(io.BytesIO(base64.b64decode(value["__npy__"])))
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


@dataclass(frozen=True)
class ChildResult:
    """What a snippet run as a test user returned or raised."""

    result: Any = None
    error: str | None = None
    message: str | None = None


def run_as(user: OsUser, socket_path: Path, code: str) -> ChildResult:
    """Run the Python snippet ``code`` as ``user``; it sets ``result``."""
    body = textwrap.indent(textwrap.dedent(code), "    ")
    source = _CHILD_PROLOGUE.replace("@@BODY@@", body)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(user.home),
        "ENCLAVE_BROKER_SOCKET": str(socket_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
    }
    completed = subprocess.run(
        [sys.executable, "-c", source],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    stdout = completed.stdout.decode(errors="replace")
    if "@@RESULT@@" not in stdout:
        raise AssertionError(
            f"child exited with {completed.returncode} without a result:\n"
            f"{completed.stderr.decode(errors='replace')[-4000:]}"
        )
    payload = json.loads(stdout.rsplit("@@RESULT@@", 1)[1])
    if "error" in payload:
        return ChildResult(error=payload["error"], message=payload["message"])
    return ChildResult(result=_decode(payload["result"]))


def decord_frames(plaintext: bytes) -> np.ndarray:
    """Decode every frame of a video held in memory, the way decord reads it."""
    import decord

    reader = decord.VideoReader(io.BytesIO(plaintext))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


@pytest.fixture(scope="session")
def member() -> Iterator[OsUser]:
    """A hub user who belongs to the current and the ended project."""
    user = create_test_user("m")
    yield user
    remove_test_user(user)


@pytest.fixture(scope="session")
def outsider() -> Iterator[OsUser]:
    """A hub user who belongs to no project."""
    user = create_test_user("o")
    yield user
    remove_test_user(user)


@pytest.fixture(scope="session")
def enclave_template(
    tmp_path_factory: pytest.TempPathFactory, member: OsUser
) -> Enclave:
    """The installation every broker test starts from; never changed by a test."""
    return build_enclave(
        tmp_path_factory.mktemp("enclave-template") / "enclave", member.hub_name
    )


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A folder for the broker socket outside pytest's root-only tmp folders."""
    folder = Path(tempfile.mkdtemp(prefix="enclave-broker-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def broker(
    enclave_template: Enclave, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningBroker]:
    """A broker over a copy of the template, shared by tests that only read."""
    enclave = copy_enclave(
        enclave_template, tmp_path_factory.mktemp("shared") / "enclave"
    )
    folder = Path(tempfile.mkdtemp(prefix="enclave-broker-test-"))
    running = start_broker(enclave, folder)
    yield running
    stop_broker(running)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def private_broker(
    enclave_template: Enclave, tmp_path: Path, socket_dir: Path
) -> Iterator[RunningBroker]:
    """A broker over this test's own copy of the template, for tests that break it."""
    enclave = copy_enclave(enclave_template, tmp_path / "enclave")
    running = start_broker(enclave, socket_dir)
    yield running
    stop_broker(running)
