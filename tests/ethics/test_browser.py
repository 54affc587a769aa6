"""Headless Chromium through the real JupyterHub and proxy, with the ethics service.

A researcher applies, two committee members approve, the researcher accepts
the data use agreement, a security administrator terminates the project, and
the researcher then reads on the page why access ended.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from enclave import projects
from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import ProjectStatus
from enclave.config import Settings
from enclave.ethics import workflow
from enclave.ethics.models import AccessClosure
from tests.lifecycle.fake_hub import free_port

from .cdp import Page, chromium_path, running_chromium
from .conftest import add_datasets

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="chromium is not installed; apt-get install chromium",
    ),
]

CONFIG = Path(__file__).with_name("jupyterhub_test_config.py")
TITLE = '<script>document.title="owned"</script>Gait after hip surgery'
REASON = "Consent withdrawn by the hospital."


@dataclass
class Hub:
    url: str
    password: str


def _wait_for_url(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyterhub exited: {log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2, allow_redirects=False).status_code < 400:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not respond: {log.read_text()[-3000:]}")


@pytest.fixture
def hub(
    settings: Settings, catalog: Catalog, audit_key: bytes, tmp_path: Path
) -> Iterator[Hub]:
    add_datasets(catalog)
    state = tmp_path / "hub"
    state.mkdir()
    hub_port, service_port = free_port(), free_port()
    password = secrets.token_urlsafe(12)
    env = {
        **os.environ,
        "ETHICS_TEST_STATE": str(state),
        "ETHICS_TEST_HUB_PORT": str(hub_port),
        "ETHICS_TEST_SERVICE_PORT": str(service_port),
        "ETHICS_TEST_PASSWORD": password,
        "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16),
        "PYTHONPATH": str(CONFIG.parents[2]),
    }
    log = state / "hub.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(CONFIG)],
            env=env,
            cwd=state,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{hub_port}"
    try:
        _wait_for_url(f"{url}/hub/health", process, log)
        _wait_for_url(f"{url}/services/ethics/static/favicon.ico", process, log)
        yield Hub(url, password)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _login(page: Page, hub: Hub, username: str) -> None:
    page.goto(f"{hub.url}/hub/login?next=/services/ethics/")
    page.wait_for("document.querySelector('#username_input')")
    page.fill("#username_input", username)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for("document.querySelector('#ethics-main')")


def _status(page: Page) -> str:
    return str(
        page.wait_for("document.querySelector('#project-status').dataset.status")
    )


def test_apply_approve_accept_terminate(
    hub: Hub, catalog: Catalog, audit_log: AuditLog
) -> None:
    project_url = f"{hub.url}/services/ethics/projects/gait-study"
    with running_chromium() as browser:
        alice, carol, dave, heidi = (browser.new_page() for _ in range(4))
        dave.call("Network.enable")
        dave.call("Network.setExtraHTTPHeaders", headers={"Accept-Language": "zh-CN"})

        # The researcher applies, with markup in the title.
        _login(alice, hub, "alice")
        alice.goto(f"{hub.url}/services/ethics/apply")
        alice.fill("#name", "gait-study")
        alice.fill("#title", TITLE)
        alice.fill("#use_scene", "research")
        alice.fill("#summary", "Walking speed from ward video.")
        alice.fill("#deid_profile", "clinical-research")
        alice.check("#dataset-ward-clips")
        alice.fill("#ends_on", (dt.date.today() + dt.timedelta(days=60)).isoformat())
        alice.fill("#ethics_ref", "EC-2026-041")
        alice.fill("#consent_basis", "written consent")
        alice.click("#submit-application")
        assert _status(alice) == "submitted"
        assert (
            alice.evaluate("document.querySelector('#project-title').textContent")
            == TITLE
        )
        assert alice.evaluate("document.title") != "owned"

        # Two committee members approve; one of them reads the page in Chinese.
        for page, name in ((carol, "carol"), (dave, "dave")):
            _login(page, hub, name)
            page.goto(project_url)
            page.check("#review-form-approve")
            page.click("#review-form-submit")
        assert "伦理审查" in dave.text()
        assert _status(dave) == "approved"

        # The researcher accepts the data use agreement.
        alice.goto(project_url)
        assert "Accept the data use agreement" in alice.text()
        alice.goto(f"{project_url}/agreement")
        # The content security policy lets the page's own style block apply.
        white_space = alice.evaluate(
            "getComputedStyle(document.querySelector('#agreement-text')).whiteSpace"
        )
        assert white_space == "pre-wrap"
        alice.check("#accept")
        alice.click("#accept-agreement")
        assert "You have accepted the data use agreement" in alice.text()
        with catalog.session() as session:
            assert workflow.has_accepted_agreement(session, "alice", "gait-study")

        # A security administrator terminates the project.
        _login(heidi, hub, "heidi")
        heidi.goto(project_url)
        heidi.fill("#terminate-form input[name=reason]", REASON)
        heidi.click("#terminate-project")
        assert _status(heidi) == "terminated"

        # The sweep revokes alice's tokens; she signs in again through the hub
        # without a password prompt and reads why her access ended.
        deadline = time.monotonic() + 60
        while True:
            with catalog.session() as session:
                closure = session.scalars(select(AccessClosure)).one()
                if closure.hub_revoked_at is not None:
                    break
            assert time.monotonic() < deadline, "the hub revocation did not finish"
            time.sleep(0.5)
        alice.goto(f"{hub.url}/services/ethics/")
        notice = alice.wait_for(
            "document.querySelector('.notice')"
            " && document.querySelector('.notice').innerText"
        )

    assert REASON in notice
    assert "was terminated on" in notice
    with catalog.session() as session:
        assert (
            projects.get_project(session, "gait-study").status
            is ProjectStatus.TERMINATED
        )
    actions = [event.action for event in audit_log.events()]
    for action in (
        "project.create",
        "project.approve",
        "agreement.accept",
        "project.terminate",
        "access.revoke",
    ):
        assert action in actions
    assert audit_log.verify().ok
    # The real hub listed and deleted alice's OAuth token of the ethics page.
    revoked = [
        e for e in audit_log.events(action="access.revoke") if e.detail["hub"] == "done"
    ]
    assert revoked[-1].detail["tokens_revoked"]["alice"] >= 1
