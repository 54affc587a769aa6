"""The ``enclave ethics`` command, and ``enclave ethics serve`` as a real process."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.cli import main
from enclave.config import Settings
from enclave.ethics import workflow
from enclave.ethics.agreement import current_agreement
from enclave.lifecycle.hub_client import project_group
from tests.lifecycle.fake_hub import (
    SERVICE_TOKEN,
    LoopThread,
    free_port,
    running_fake_hub,
)

from .conftest import TODAY, add_datasets, make_application

ENCLAVE = Path(sys.executable).parent / "enclave"


def _approved(catalog: Catalog, audit: AuditLog, **changes: object) -> None:
    add_datasets(catalog)
    with catalog.session(immediate=True) as session:
        workflow.apply(
            session,
            audit,
            make_application(datasets=("teaching-clips",), **changes),
            applicant="alice",
        )
    with catalog.session(immediate=True) as session:
        workflow.review_application(
            session, audit, "gait-study", reviewer="rev-li", decision="approve"
        )


def test_agreement_command(capsys: pytest.CaptureFixture[str]) -> None:
    agreement = current_agreement()

    status = main(["ethics", "agreement", "--language", "zh_CN"])

    out = capsys.readouterr().out
    assert status == 0
    assert f"version {agreement.version}" in out
    assert f"sha256 {agreement.sha256('zh_CN')}" in out
    assert "数据使用协议" in out


def test_revoke_expired_command(
    catalog: Catalog,
    audit_log: AuditLog,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    _approved(
        catalog,
        audit_log,
        starts_on=TODAY - dt.timedelta(days=60),
        ends_on=TODAY - dt.timedelta(days=1),
    )

    status = main(["ethics", "revoke-expired"])

    out = capsys.readouterr().out
    assert status == 0
    assert "ended: gait-study" in out
    assert "hub steps pending" in out
    assert audit_log.events(action="project.end")[-1].actor == "cli"


def _wait_for(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_serve_revokes_within_seconds(
    settings: Settings, catalog: Catalog, audit_log: AuditLog
) -> None:
    _approved(catalog, audit_log)
    with catalog.session(immediate=True) as session:
        workflow.terminate(session, audit_log, "gait-study", actor="heidi", reason="x")
    loop = LoopThread()
    port = free_port()
    try:
        with running_fake_hub(loop) as (hub, api_url):
            hub.add_user("alice")
            hub.groups[project_group("gait-study")] = {"alice"}
            hub.users["alice"].running = True
            env = {
                **os.environ,
                "JUPYTERHUB_API_URL": api_url,
                "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN,
                "JUPYTERHUB_CLIENT_ID": "service-ethics",
                "JUPYTERHUB_SERVICE_PREFIX": "/services/ethics/",
                "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
                "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:services!service=ethics"]',
            }
            process = subprocess.Popen(
                [str(ENCLAVE), "ethics", "serve", "--sweep-interval", "1"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:
                revoked = _wait_for(
                    lambda: (
                        not hub.users["alice"].tokens
                        and not hub.groups[project_group("gait-study")]
                        and not hub.users["alice"].running
                    )
                )
                url = f"http://127.0.0.1:{port}/services/ethics/"
                assert _wait_for(lambda: _answers(url))
                login = requests.get(url, allow_redirects=False, timeout=10)
            finally:
                process.send_signal(signal.SIGTERM)
                output = process.communicate(timeout=30)[0].decode()
    finally:
        loop.stop()

    assert revoked, output
    assert login.status_code == 302
    assert "/hub/api/oauth2/authorize" in login.headers["Location"]
    assert process.returncode == 0, output


def _answers(url: str) -> bool:
    try:
        requests.get(url, allow_redirects=False, timeout=2)
    except requests.ConnectionError:
        return False
    return True
