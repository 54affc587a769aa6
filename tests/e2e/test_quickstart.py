"""The whole path on one machine: real video in, approved project, notebook out.

The tests start the OpenID provider, configurable-http-proxy, JupyterHub, the
broker, the audit collector and the ethics page on loopback. The demo
researcher logs in through the OpenID Connect flow and runs the quickstart
notebook in a real kernel of her server. The tests check the numbers, the
audit trail, a non-member's refusal and the end of access at termination.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from enclave.audit import AuditLog, load_audit_key
from enclave.catalog.db import Catalog
from enclave.catalog.models import Dataset
from enclave.cli import main as cli_main
from enclave.config import Settings
from enclave.demo import DEMO_DATASET, DEMO_PROJECT
from enclave.vault import KeyRing, Vault
from tests.e2e.frames import frame_means
from tests.e2e.notebook_runner import ServerKernel, code_cells
from tests.fixtures.hub import login, start_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "notebooks" / "01-quickstart.ipynb"


@pytest.fixture(scope="module")
def stack(enclave_stack: tuple[Settings, object]) -> tuple[Settings, object]:
    """The whole enclave of this module (see ``enclave_stack`` in conftest.py)."""
    return enclave_stack


def _expected_brightness(settings: Settings) -> dict[str, list[float]]:
    """Decode each derivative straight from the vault, without the broker."""
    catalog = Catalog(settings.db_url)
    vault = Vault(settings.vault_dir, KeyRing.load(settings.master_key_path))
    expected = {}
    with catalog.session() as session:
        dataset = session.query(Dataset).filter_by(name=DEMO_DATASET).one()
        for item in dataset.items:
            expected[item.path] = frame_means(vault, item.asset)
    return expected


def _audit(settings: Settings) -> AuditLog:
    return AuditLog(Catalog(settings.db_url), load_audit_key(settings.audit_key_path))


def _accept_agreement(hub, session: requests.Session, project: str) -> None:
    """Accept the project's data use agreement on the ethics page, as a browser does."""
    url = f"{hub.hub_url}/services/ethics/projects/{project}/agreement"
    page = session.get(url, timeout=60)
    assert page.status_code == 200, page.text[:500]
    form = {
        name: re.search(rf'name="{name}" value="([^"]*)"', page.text).group(1)
        for name in ("_xsrf", "language", "sha256")
    }
    response = session.post(url, data={**form, "accept": "yes"}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    assert "agreement-status" in response.text


def _notebook_cells(hub, session: requests.Session, owner: str, path: str) -> list[str]:
    """Read a notebook from the user's home through the server's contents API."""
    response = session.get(
        f"{hub.hub_url}/user/{owner}/api/contents/{path}", timeout=60
    )
    assert response.status_code == 200, response.text[:500]
    notebook = response.json()["content"]
    return [cell["source"] for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_quickstart_runs_for_member(stack) -> None:
    settings, hub = stack
    alice = login(hub, "alice")
    start_server(hub, alice, "alice")
    kernel = ServerKernel(hub.hub_url, alice, "alice", "enclave-python")
    cells = _notebook_cells(hub, alice, "alice", "examples/01-quickstart.ipynb")
    assert cells == code_cells(QUICKSTART)

    try:
        before = kernel.execute(cells[0])
        _accept_agreement(hub, alice, DEMO_PROJECT)
        runs = [kernel.execute(code) for code in cells]
    finally:
        kernel.shutdown()

    assert before.status == "error"
    assert "data use agreement" in before.errors[0]["evalue"]

    for run in runs:
        assert run.status == "ok", (run.code, run.errors)
    summary = json.loads(runs[-1].stdout.strip().splitlines()[-1])
    expected = _expected_brightness(settings)
    assert sorted(summary) == sorted(expected)
    for path, values in expected.items():
        np.testing.assert_allclose(summary[path], values, atol=1e-3, err_msg=path)

    audit = _audit(settings)
    executed = audit.events(actor="alice", action="cell.execute")
    assert [event.detail["code"] for event in executed] == [cells[0], *cells]
    (accepted,) = audit.events(actor="alice", action="agreement.accept")
    assert accepted.project == DEMO_PROJECT
    reads = audit.events(actor="alice", action="data.read", outcome="success")
    assert {event.dataset for event in reads} == {DEMO_DATASET}
    assert {event.project for event in reads} == {DEMO_PROJECT}
    frames_read: dict[str, set[int]] = {path: set() for path in expected}
    for event in reads:
        start, stop = event.detail["frames"]
        frames_read[event.detail["path"]].update(range(start, stop))
    for path, values in expected.items():
        assert frames_read[path] == set(range(len(values))), path
    assert audit.verify().ok


def test_non_member_is_refused_and_audited(stack) -> None:
    settings, hub = stack
    bob = login(hub, "bob")
    start_server(hub, bob, "bob")
    kernel = ServerKernel(hub.hub_url, bob, "bob", "enclave-python")

    try:
        run = kernel.execute(
            "import enclave\n"
            f"tree = enclave.open_dataset({DEMO_DATASET!r})\n"
            "tree['clips/0001'].frames[:4].compute()"
        )
    finally:
        kernel.shutdown()

    assert run.status == "error"
    assert run.errors[0]["ename"] == "PermissionDenied"
    assert "no current project" in run.errors[0]["evalue"]
    denied = _audit(settings).events(actor="bob", outcome="denied")
    assert denied, "the broker wrote no record of the refused read"
    assert denied[-1].dataset == DEMO_DATASET


def test_termination_ends_access_within_a_minute(stack) -> None:
    settings, hub = stack
    alice = login(hub, "alice")
    start_server(hub, alice, "alice")
    kernel = ServerKernel(hub.hub_url, alice, "alice", "enclave-python")
    read = (
        "import enclave\n"
        f"tree = enclave.open_dataset({DEMO_DATASET!r})\n"
        "print(tree['clips/0001'].frames[:2].compute().shape)"
    )
    reason = "consent withdrawn by the ward"

    try:
        first = kernel.execute(read)
        status = cli_main(
            ["project", "terminate", DEMO_PROJECT, "--as", "grace", "--reason", reason]
        )
        after = kernel.execute(read)
    finally:
        kernel.ws.close()

    assert first.status == "ok", first.errors
    assert status == 0
    assert after.status == "error"
    assert after.errors[0]["ename"] == "PermissionDenied"
    assert "terminated" in after.errors[0]["evalue"]

    # The ethics service's sweep stops the server and leaves a notice.
    deadline = time.monotonic() + 60
    model = {}
    while time.monotonic() < deadline:
        model = alice.get(
            f"{hub.hub_url}/hub/api/users/alice",
            headers={"X-XSRFToken": alice.cookies.get("_xsrf", path="/hub/")},
            timeout=60,
        ).json()
        if not model.get("servers"):
            break
        time.sleep(2)
    assert not model.get("servers"), "alice's server still runs a minute later"
    page = alice.get(f"{hub.hub_url}/services/ethics/", timeout=60)
    assert reason in page.text

    audit = _audit(settings)
    assert audit.events(action="project.terminate", project=DEMO_PROJECT)
    assert audit.events(action="access.revoke", project=DEMO_PROJECT)
    assert audit.verify().ok
