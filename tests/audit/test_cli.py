"""The ``enclave audit`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from enclave.audit import AuditLog
from enclave.catalog.models import AuditEvent
from enclave.cli import main
from enclave.config import Settings


def _fill(audit_log: AuditLog) -> None:
    audit_log.append(
        actor="alice", action="data.list", outcome="success", source="broker"
    )
    audit_log.append(
        actor="bob",
        action="data.read",
        outcome="denied",
        source="broker",
        dataset="carphone",
        detail={"path": "clips/0001"},
    )
    audit_log.append(
        actor="alice", action="data.read", outcome="success", source="broker"
    )


def test_verify_ok(audit_log: AuditLog, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(audit_log)

    status = main(["audit", "verify"])

    assert status == 0
    assert capsys.readouterr().out.strip() == "audit chain ok: 3 records"


def test_verify_reports_tampering(
    audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(audit_log)
    with audit_log.catalog.engine.begin() as connection:
        connection.execute(
            update(AuditEvent).where(AuditEvent.seq == 2).values(outcome="success")
        )

    status = main(["audit", "verify", "--json"])

    assert status == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["first_bad_seq"] == 2


def test_list_filters_and_json(
    audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(audit_log)

    status = main(["audit", "list", "--actor", "bob", "--json"])

    assert status == 0
    (event,) = json.loads(capsys.readouterr().out)
    assert event["seq"] == 2
    assert event["outcome"] == "denied"
    assert event["detail"] == {"path": "clips/0001"}


def test_list_text(audit_log: AuditLog, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(audit_log)

    status = main(["audit", "list", "--action", "data.read", "--limit", "1"])

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert len(lines) == 1
    assert lines[0].split()[0] == "3"
    assert "alice" in lines[0]


def test_list_rejects_bad_since(
    audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["audit", "list", "--since", "yesterday"])

    assert status == 1
    assert "invalid --since 'yesterday'" in capsys.readouterr().err


def test_verify_without_key(settings: Settings, catalog, capsys) -> None:  # type: ignore[no-untyped-def]
    status = main(["audit", "verify"])

    assert status == 1
    assert "audit key" in capsys.readouterr().err


def test_serve_calls_collector(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from enclave.audit import service

    calls = []
    monkeypatch.setattr(service, "serve", lambda s, path: calls.append((s, path)))

    status = main(["audit", "serve", "--socket", str(settings.run_dir / "a.sock")])

    assert status == 0
    assert calls == [(settings, str(settings.run_dir / "a.sock"))]


def test_entry_point_runs(audit_log: AuditLog) -> None:
    _fill(audit_log)

    result = subprocess.run(
        [str(Path(sys.executable).parent / "enclave"), "audit", "verify"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "3 records" in result.stdout
