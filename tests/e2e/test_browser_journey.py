"""A researcher's whole journey in headless Chromium, from application to termination.

Every person signs in through the real OpenID provider's pages, in a browser
context of their own. The researcher bob, in no project yet, applies for a
project on the ethics page, and the committee members carol and dave approve
it. bob accepts the data use agreement, starts his server and reads frames in
a JupyterLab notebook. The security administrator grace, who signs in with a
TOTP code, terminates the project. The enclave stops bob's server within a
minute, the same notebook's next read fails with an error that names the
termination, and the ethics page shows bob why his access ended.

The revocation sweep stops the members' servers at termination, which ends
the notebook's kernel. So bob's next read runs in the same notebook after he
starts his server again, and the broker rejects it.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pytest
from sqlalchemy import select

from enclave.audit import AuditLog, load_audit_key
from enclave.catalog.db import Catalog
from enclave.catalog.models import Dataset
from enclave.config import Settings
from enclave.demo import DEMO_DATASET
from enclave.hub.launch import Running
from enclave.vault import KeyRing, Vault
from tests.ethics.cdp import Page, chromium_path, running_chromium
from tests.e2e.frames import frame_means
from tests.fixtures.hub import find_server_process

from .browser import (
    click_at,
    dumped_on_failure,
    fetch,
    open_signed_in,
    page_cookie,
    press_control_enter,
    press_save,
    wait_until,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="chromium is not installed; apt-get install chromium",
    ),
]

PROJECT = "ward-gait"
TITLE = '<script>document.title="owned"</script>Gait on the ward'
REASON = "Consent withdrawn by the ward."
CLIP = "clips/0001"
FRAMES = 4
NOTEBOOK = "access-check.ipynb"
MARKER = "ACCESS-CHECK"
CELL = (
    "import json\n"
    "import enclave\n"
    f"tree = enclave.open_dataset({DEMO_DATASET!r})\n"
    f"frames = tree[{CLIP!r}].frames[:{FRAMES}].compute()\n"
    "means = frames.mean(('y', 'x', 'channel')).values\n"
    f"print({MARKER!r}, json.dumps("
    "{'shape': list(frames.shape), 'means': [float(v) for v in means]}))"
)

# JupyterLab's visible notebook, the status bar's kernel state of the current
# notebook, and the notebook's cell and output.
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
KERNEL_IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
PROMPT = f"{PANEL} .jp-Cell .jp-InputPrompt"
OUTPUT_TEXT = (
    f"Array.from(document.querySelectorAll('{PANEL} .jp-Cell .jp-OutputArea-output'))"
    ".map(e => e.innerText).join('\\n')"
)
LAB_TIMEOUT = 180.0
KERNEL_TIMEOUT = 180.0
SHORTCUT_TIMEOUT = 10.0


def _expected_means(settings: Settings) -> list[float]:
    """Return the clip's frame means, decoded from the vault without the broker."""
    catalog = Catalog(settings.db_url)
    vault = Vault(settings.vault_dir, KeyRing.load(settings.master_key_path))
    with catalog.session() as session:
        dataset = session.scalars(
            select(Dataset).where(Dataset.name == DEMO_DATASET)
        ).one()
        (item,) = [item for item in dataset.items if item.path == CLIP]
        means = frame_means(vault, item.asset, FRAMES)
    catalog.dispose()
    return means


def _notebook() -> dict:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {
                "display_name": "Python (enclave)",
                "language": "python",
                "name": "enclave-python",
            }
        },
        "cells": [
            {
                "cell_type": "code",
                "id": "read-frames",
                "metadata": {},
                "execution_count": None,
                "source": CELL,
                "outputs": [],
            }
        ],
    }


def _project_ready() -> str:
    return "document.querySelector('#project-status')"


def _lab_ready(username: str) -> str:
    return (
        f"location.pathname.startsWith('/user/{username}/lab')"
        f" && document.querySelector({json.dumps(PROMPT)})"
    )


def _status(page: Page) -> str:
    return str(
        page.wait_for("document.querySelector('#project-status').dataset.status")
    )


def _kernel_connected(page: Page, username: str) -> bool:
    """Return whether the notebook's kernel runs, is idle and has a client."""
    listing = fetch(
        page, "GET", f"/user/{username}/api/sessions", xsrf_from_cookie=True
    )
    if listing["status"] != 200:
        return False
    return any(
        session["path"] == NOTEBOOK
        and session["kernel"]["connections"] >= 1
        and session["kernel"]["execution_state"] == "idle"
        for session in json.loads(listing["text"])
    )


def _run_first_cell(page: Page, username: str, expected: str) -> str:
    """Run the first cell by keyboard and return its output once it has ``expected``."""
    # The status bar reads "Idle" before the kernel has even started, and a
    # shortcut pressed then is lost, so wait for the server's kernel state as well.
    wait_until(
        lambda: _kernel_connected(page, username),
        f"the kernel of {NOTEBOOK} did not start",
        KERNEL_TIMEOUT,
        interval=0.5,
    )
    page.wait_for(f"document.querySelector({json.dumps(KERNEL_IDLE)})", KERNEL_TIMEOUT)

    output_has_expected = (
        f"(() => {{ const text = {OUTPUT_TEXT};"
        f" return text.includes({json.dumps(expected)}) ? text : null; }})()"
    )
    # An output saved earlier must not pass for the new one.
    assert page.evaluate(output_has_expected) is None
    prompt = f"document.querySelector({json.dumps(PROMPT)})"
    prompt_busy = f"{prompt}.innerText.includes('*')"
    # Press again if a run was lost or dropped. The prompt then never shows
    # "[*]:", or shows it and ends without the expected output.
    deadline = time.monotonic() + KERNEL_TIMEOUT

    while True:
        click_at(page, PROMPT)
        press_control_enter(page)
        try:
            page.wait_for(f"{output_has_expected} || {prompt_busy}", SHORTCUT_TIMEOUT)
            page.wait_for(f"!({prompt_busy})", KERNEL_TIMEOUT)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
            continue
        output = page.evaluate(output_has_expected)
        if output or time.monotonic() > deadline:
            break
    return str(page.wait_for(output_has_expected, SHORTCUT_TIMEOUT))


def _save_notebook(page: Page) -> None:
    """Save the notebook, so that leaving JupyterLab opens no "leave page?" dialog."""
    press_save(page)
    page.wait_for("document.querySelector('.jp-mod-dirty') === null")


def _hub_server_stopped(page: Page, username: str) -> bool:
    """Return whether the hub's API, requested from a hub page, lists no server."""
    response = fetch(
        page, "GET", f"/hub/api/users/{username}", xsrf_from_cookie=True
    )
    assert response["status"] == 200, response
    model = json.loads(response["text"])
    return not model["servers"] and not model.get("pending")


def _server_running(hub: Running, username: str) -> bool:
    """Return whether a server process of ``username`` is in /proc."""
    try:
        find_server_process(hub, username)
    except AssertionError:
        return False
    return True


def _apply(page: Page, hub: Running, ethics: str) -> None:
    open_signed_in(
        page,
        hub,
        "bob",
        f"{ethics}/apply",
        "document.querySelector('#application-form')",
    )
    today = dt.date.today()
    for selector, value in (
        ("#name", PROJECT),
        ("#title", TITLE),
        ("#principal_investigator", "bob"),
        ("#use_scene", "research"),
        ("#summary", "Walking speed of inpatients from ward video."),
        ("#deid_profile", "clinical-research"),
        ("#starts_on", today.isoformat()),
        ("#ends_on", (today + dt.timedelta(days=60)).isoformat()),
        ("#ethics_ref", "EC-2026-077"),
        ("#consent_basis", "written consent, form v3"),
    ):
        page.fill(selector, value)
    page.check(f"#dataset-{DEMO_DATASET}")
    page.click("#submit-application")


def test_journey_apply_read_terminate(
    enclave_stack: tuple[Settings, Running], tmp_path
) -> None:
    settings, hub = enclave_stack
    ethics = f"{hub.hub_url}/services/ethics"
    project_url = f"{ethics}/projects/{PROJECT}"
    for member in ("carol", "dave"):
        assert "ethics-committee" in hub.accounts[member].groups
    assert "security-admins" in hub.accounts["grace"].groups
    assert hub.accounts["grace"].totp_secret, "grace signs in with a second factor"

    with running_chromium() as browser:
        pages = {name: browser.new_page() for name in ("bob", "carol", "dave", "grace")}
        bob, carol, dave, grace = pages.values()
        dave.call("Network.enable")
        dave.call("Network.setExtraHTTPHeaders", headers={"Accept-Language": "zh-CN"})

        with dumped_on_failure(pages, tmp_path / "pages"):
            # 1. bob applies, with markup in the title.
            _apply(bob, hub, ethics)
            assert _status(bob) == "submitted"
            shown_title = bob.evaluate(
                "document.querySelector('#project-title').textContent"
            )
            assert shown_title == TITLE
            title_scripts = bob.evaluate(
                "document.querySelectorAll('#project-title script').length"
            )
            assert title_scripts == 0
            assert bob.evaluate("document.title") != "owned"

            # 2. Two committee members approve, and dave reads the page in Chinese.
            open_signed_in(carol, hub, "carol", project_url, _project_ready())
            carol.check("#review-form-approve")
            carol.click("#review-form-submit")
            assert _status(carol) == "submitted", "one approval is not enough"
            open_signed_in(dave, hub, "dave", project_url, _project_ready())
            dave.check("#review-form-approve")
            dave.click("#review-form-submit")
            assert "伦理审查" in dave.text()
            assert _status(dave) == "approved"

            # The applicant bob gets no form for a third approval, and his
            # forged POST with a valid XSRF token is rejected.
            bob.goto(project_url)
            assert _status(bob) == "approved"
            assert bob.evaluate("document.querySelector('#review-form')") is None
            # The service accepts its cookie on a script's request only with
            # the XSRF token, so the forgery carries it in the form and header.
            xsrf = page_cookie(bob, "_xsrf")
            forged = fetch(
                bob,
                "POST",
                f"{project_url}/review",
                form={"_xsrf": xsrf, "decision": "approve"},
                xsrf_from_cookie=True,
            )
            assert forged["status"] == 403, forged
            assert "ethics-committee" in forged["text"]

            # 3. bob accepts the agreement, starts his server and reads frames.
            bob.goto(f"{project_url}/agreement")
            bob.check("#accept")
            bob.click("#accept-agreement")
            assert "You have accepted the data use agreement" in bob.text()

            open_signed_in(
                bob,
                hub,
                "bob",
                f"{hub.hub_url}/hub/spawn",
                "location.pathname.startsWith('/user/bob/lab')"
                " && document.querySelector('.jp-LabShell')",
                LAB_TIMEOUT,
            )
            created = fetch(
                bob,
                "PUT",
                f"/user/bob/api/contents/{NOTEBOOK}",
                json_body={
                    "type": "notebook",
                    "format": "json",
                    "content": _notebook(),
                },
                xsrf_from_cookie=True,
            )
            assert created["status"] == 201, created
            notebook_url = f"{hub.hub_url}/user/bob/lab/tree/{NOTEBOOK}"
            bob.call("Page.navigate", url=notebook_url)
            bob.wait_for(_lab_ready("bob"), LAB_TIMEOUT)
            first = _run_first_cell(bob, "bob", MARKER)
            _save_notebook(bob)

            # 4. grace terminates the project on the page.
            open_signed_in(grace, hub, "grace", project_url, _project_ready())
            grace.fill("#terminate-form input[name=reason]", REASON)
            grace.click("#terminate-project")
            terminated_at = time.monotonic()
            assert _status(grace) == "terminated"
            assert REASON in grace.text()

            # bob watches his server on the hub's home page.
            home = f"{hub.hub_url}/hub/home"
            open_signed_in(bob, hub, "bob", home, "document.querySelector('#start')")
            wait_until(
                lambda: _hub_server_stopped(bob, "bob"),
                "the hub still lists bob's server after the termination",
                timeout=60,
                interval=0.5,
            )
            stopped_after = time.monotonic() - terminated_at
            assert not _server_running(hub, "bob")

            # bob starts his server again, and the same notebook's next read fails.
            open_signed_in(
                bob,
                hub,
                "bob",
                f"{hub.hub_url}/hub/spawn?next=/user/bob/lab/tree/{NOTEBOOK}",
                _lab_ready("bob"),
                LAB_TIMEOUT,
            )
            after = _run_first_cell(bob, "bob", "PermissionDenied")
            _save_notebook(bob)

            # The ethics page shows why.
            open_signed_in(
                bob, hub, "bob", f"{ethics}/", "document.querySelector('.notice')"
            )
            notice = bob.evaluate("document.querySelector('.notice').innerText")

    line = next(row for row in first.splitlines() if row.startswith(MARKER))
    read = json.loads(line.removeprefix(MARKER))
    assert read["shape"][0] == FRAMES
    assert read["shape"][-1] == 3
    np.testing.assert_allclose(read["means"], _expected_means(settings), atol=1e-3)

    assert stopped_after < 60
    assert f"PermissionDenied: project {PROJECT!r} was terminated on" in after
    printed = [row for row in after.splitlines() if row.startswith(MARKER)]
    assert printed == [], "the read after the termination printed frames"

    assert f"Project {PROJECT} was terminated on" in notice
    assert REASON in notice

    audit = AuditLog(Catalog(settings.db_url), load_audit_key(settings.audit_key_path))
    approvals = audit.events(action="project.approve", project=PROJECT)
    assert {event.actor for event in approvals} >= {"carol", "dave"}
    rejected_reviews = audit.events(
        actor="bob", action="project.review", outcome="denied"
    )
    assert [event.project for event in rejected_reviews] == [PROJECT]
    assert audit.events(actor="bob", action="agreement.accept", project=PROJECT)
    reads = audit.events(actor="bob", action="data.read", outcome="success")
    read_scopes = {(event.dataset, event.project) for event in reads}
    assert read_scopes == {(DEMO_DATASET, PROJECT)}
    assert audit.events(actor="grace", action="project.terminate", project=PROJECT)
    assert audit.events(action="access.revoke", project=PROJECT)
    # The rejected open_dataset is the broker's listing of the dataset.
    denied = audit.events(actor="bob", outcome="denied", dataset=DEMO_DATASET)
    assert [event.action for event in denied] == ["data.list"]
    assert audit.verify().ok
