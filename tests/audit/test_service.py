"""The audit collector as a real process: peer identity, schema, failures."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.audit import AuditLog
from enclave.audit.service import (
    MAX_CODE_BYTES,
    EventRejected,
    RateLimiter,
    bind_socket,
    validate_event,
)
from enclave.catalog.db import Catalog
from enclave.config import Settings
from enclave.errors import ConfigurationError
from tests.extension.support import (
    OSUser,
    os_user,
    post_as,
    running_collector,
    shared_folder,
)


def cell_event(**changes: object) -> dict:
    event = {
        "action": "cell.execute",
        "kernel_id": "k-1",
        "session_id": "s-1",
        "cell_id": "c-1",
        "msg_id": "m-1",
        "code": "print('hello')",
        "at": "2026-12-04T15:00:00+00:00",
    }
    event.update(changes)
    return {key: value for key, value in event.items() if value is not ...}


def encode(event: dict) -> bytes:
    return json.dumps(event).encode()


@pytest.fixture(scope="module")
def enclave_user() -> Iterator[OSUser]:
    with os_user("enc-t") as user:
        yield user


@pytest.fixture(scope="module")
def other_user() -> Iterator[OSUser]:
    # An OS user outside the enclave's user prefix "enc-".
    with os_user("enclave-t") as user:
        yield user


@pytest.fixture
def run_dir() -> Iterator[Path]:
    with shared_folder() as folder:
        yield folder / "run"


@pytest.fixture
def collector(
    settings: Settings, catalog: Catalog, audit_key: bytes, run_dir: Path
) -> Iterator:
    with running_collector(os.environ, run_dir) as running:
        yield running


def test_socket_writable_by_everyone(collector) -> None:
    mode = stat.S_IMODE(collector.socket_path.stat().st_mode)
    assert mode == 0o666
    assert stat.S_ISSOCK(collector.socket_path.stat().st_mode)


def test_event_recorded_with_peer_user(
    collector, enclave_user: OSUser, audit_log: AuditLog, settings: Settings
) -> None:
    [(status, reply)] = post_as(
        enclave_user, collector.socket_path, [encode(cell_event())]
    )

    assert status == 201, reply
    [record] = audit_log.events(action="cell.execute")
    assert record.seq == reply["seq"]
    assert record.chain_hash == reply["hash"]
    assert record.actor == settings.hub_user(enclave_user.name)
    assert record.source == "jupyter-server"
    assert record.outcome == "success"
    assert record.target == "k-1"
    assert record.detail["code"] == "print('hello')"
    assert record.detail["msg_id"] == "m-1"
    assert record.detail["cell_id"] == "c-1"
    assert record.detail["client_at"] == "2026-12-04T15:00:00+00:00"
    assert len(record.detail["code_sha256"]) == 64
    assert audit_log.verify().ok


def test_download_block_recorded(
    collector, enclave_user: OSUser, audit_log: AuditLog
) -> None:
    event = {
        "action": "download.blocked",
        "path": "clips/a.mp4",
        "route": "files",
        "reason": "files ending in .mp4 are blocked",
        "at": "2026-12-04T15:00:00+00:00",
    }
    [(status, reply)] = post_as(enclave_user, collector.socket_path, [encode(event)])

    assert status == 201, reply
    [record] = audit_log.events(action="download.blocked")
    assert record.outcome == "denied"
    assert record.target == "clips/a.mp4"


def test_isolated_process_cannot_post_server_events(
    collector, enclave_user: OSUser, audit_log: AuditLog, settings: Settings
) -> None:
    # A process in a user namespace of its own, like an enclave kernel, runs
    # as the same OS user as the Jupyter server but must not post its events.
    block = {
        "action": "download.blocked",
        "path": "forged.mp4",
        "route": "files",
        "reason": "forged",
        "at": "2026-12-04T15:00:00+00:00",
    }
    bodies = [encode(cell_event(code="print('forged')")), encode(block)]

    replies = post_as(enclave_user, collector.socket_path, bodies, isolated=True)

    for (status, reply), action in zip(replies, ["cell.execute", "download.blocked"]):
        assert status == 403
        assert f"{action} events are accepted only from the Jupyter server" in (
            reply["message"]
        )
        assert "runs in another user namespace" in reply["message"]
    assert audit_log.events(action="cell.execute") == []
    assert audit_log.events(action="download.blocked") == []
    rejected = audit_log.events(action="audit.event_rejected")
    assert [event.target for event in rejected] == ["cell.execute", "download.blocked"]
    assert all(event.outcome == "denied" for event in rejected)
    assert all(
        event.actor == settings.hub_user(enclave_user.name) for event in rejected
    )
    assert audit_log.verify().ok


def test_payload_cannot_name_user(
    collector, enclave_user: OSUser, audit_log: AuditLog
) -> None:
    bodies = [
        encode(cell_event(actor="alice")),
        encode(cell_event(user="alice")),
        encode(cell_event(os_user="enc-alice")),
    ]
    replies = post_as(enclave_user, collector.socket_path, bodies)

    for status, reply in replies:
        assert status == 400
        assert "unknown fields" in reply["message"]
    assert audit_log.events() == []


def test_non_enclave_user_rejected(
    collector, other_user: OSUser, audit_log: AuditLog
) -> None:
    [(status, reply)] = post_as(
        other_user, collector.socket_path, [encode(cell_event())]
    )

    assert status == 403
    assert f"uid {other_user.uid} is not an enclave user" in reply["message"]
    assert audit_log.events() == []


def test_root_rejected(collector, audit_log: AuditLog) -> None:
    # This test process runs as root, which is not an enclave user either.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(collector.socket_path))
        body = encode(cell_event())
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk

    assert response.startswith(b"HTTP/1.1 403")
    assert audit_log.events() == []


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "not JSON"),
        (b"[1, 2]", 400, "expected a JSON object"),
        (encode(cell_event(action="cell.delete")), 400, "invalid action 'cell.delete'"),
        (encode(cell_event(code=...)), 400, "missing field 'code'"),
        (
            encode(cell_event(kernel_id=7)),
            400,
            "invalid field 'kernel_id': expected str",
        ),
        (encode(cell_event(msg_id=None)), 400, "invalid field 'msg_id'"),
        (encode(cell_event(kernel_id="k" * 2000)), 400, "longer than 1024 characters"),
        (b'{"action": "cell.execute", "kernel_id": "\\ud800"}', 400, "lone surrogate"),
        (
            encode(cell_event(code="x" * (MAX_CODE_BYTES + 1))),
            413,
            f"larger than the limit of {MAX_CODE_BYTES} bytes",
        ),
    ],
    ids=[
        "not-json",
        "not-object",
        "unknown-action",
        "missing-code",
        "wrong-type",
        "null-msg-id",
        "long-id",
        "surrogate",
        "code-too-large",
    ],
)
def test_malformed_event_rejected(
    collector,
    enclave_user: OSUser,
    audit_log: AuditLog,
    body: bytes,
    status: int,
    message: str,
) -> None:
    [(got_status, reply)] = post_as(enclave_user, collector.socket_path, [body])

    assert got_status == status
    assert message in reply["message"]
    assert audit_log.events() == []


def test_unwritable_trail_returns_503(
    collector, enclave_user: OSUser, settings: Settings
) -> None:
    database = settings.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TABLE audit_head")

    [(status, reply)] = post_as(
        enclave_user, collector.socket_path, [encode(cell_event())]
    )

    assert status == 503
    assert "audit trail cannot be written" in reply["message"]


def test_health(collector) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(collector.socket_path))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk

    assert response.startswith(b"HTTP/1.1 200")
    assert b'"status": "ok"' in response


def test_sigterm_removes_socket(collector) -> None:
    output = collector.stop()

    assert collector.process.returncode == 0, output
    assert not collector.socket_path.exists()
    assert "audit collector stopped" in output


def test_validate_event_keeps_optional_fields() -> None:
    event = cell_event(msg_type="execute_request", channel="shell", cell_id=None)

    assert validate_event(event) == event
    with pytest.raises(EventRejected, match="invalid field 'channel'"):
        validate_event(cell_event(channel=3))


def test_second_collector_rejected(collector) -> None:
    second = subprocess.run(
        [
            sys.executable,
            "-c",
            "from enclave.cli import main; raise SystemExit(main())",
            "audit",
            "serve",
        ],
        env=collector.env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert second.returncode == 1
    assert "another process is already listening" in second.stderr
    assert collector.process.poll() is None
    assert collector.socket_path.is_socket()


def test_bind_socket_bad_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "run"
    blocker.write_text("a file where the socket folder should be")

    with pytest.raises(ConfigurationError, match="cannot create the audit socket"):
        bind_socket(blocker / "sub" / "audit.sock")


def test_rate_limiter_caps_events_and_bytes() -> None:
    limiter = RateLimiter(max_events=3, max_bytes=100, window=60)

    assert limiter.admit(1000, 10, now=0.0) is None
    assert limiter.admit(1000, 10, now=1.0) is None
    assert limiter.admit(1000, 10, now=2.0) is None
    assert "at most 3 events" in limiter.admit(1000, 10, now=3.0)
    assert limiter.admit(1001, 90, now=3.0) is None, "another user has its own quota"
    assert "too many audit events" in limiter.admit(1001, 20, now=4.0)
    assert limiter.admit(1000, 10, now=61.0) is None, "the window rolls on"
