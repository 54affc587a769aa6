"""The ``enclave reid`` command, on a real catalog, audit trail and mapping."""

from __future__ import annotations

import json
import re

import pytest

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import ReidentificationRequest, utcnow
from enclave.cli import main
from enclave.deid.pseudonyms import PseudonymStore
from tests.deid.support import ingest_and_derive, login

IDENTITY = "asset-7-secret-identity"


@pytest.fixture
def pseudonym(settings, keyring) -> str:  # type: ignore[no-untyped-def]
    store = PseudonymStore(settings.home / "pseudonyms", keyring)
    value = store.pseudonym("asset-7", namespace="asset")
    store.record(value, {"asset_id": IDENTITY})
    return value


@pytest.fixture
def staff(catalog: Catalog, audit_log: AuditLog) -> Catalog:
    """Hub logins of the designated staff, on a catalog with an audit key."""
    login(catalog, "dr-lee", ["reid-requesters", "researchers"])
    login(catalog, "officer-kim", ["reid-approvers", "security-admins"])
    login(catalog, "mallory", ["researchers"])
    return catalog


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["reid", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def request_id(output: str) -> str:
    match = re.search(r"re-identification ([0-9a-f]{32})", output)
    assert match, output
    return match.group(1)


def test_cli_request_approve_reveal(  # type: ignore[no-untyped-def]
    staff, audit_log: AuditLog, pseudonym, capsys, monkeypatch
):
    monkeypatch.setattr("getpass.getuser", lambda: "operator")

    status, out, _ = run(
        capsys, "request", pseudonym, "--reason", "incidental finding", "--as", "dr-lee"
    )
    assert status == 0
    rid = request_id(out)
    assert f"enclave reid approve {rid}" in out

    status, out, _ = run(capsys, "approve", rid, "--as", "officer-kim")
    assert status == 0
    assert f"enclave reid reveal {rid} --as dr-lee" in out

    status, out, _ = run(capsys, "reveal", rid, "--as", "dr-lee")
    assert status == 0
    assert json.loads(out) == {"asset_id": IDENTITY}

    status, out, _ = run(capsys, "list", "--json")
    assert status == 0
    (listed,) = json.loads(out)
    assert listed["id"] == rid
    assert listed["status"] == "revealed"
    assert listed["requester"] == "dr-lee"
    assert listed["approver"] == "officer-kim"
    trail = list(audit_log.events())
    assert [(e.actor, e.action, e.outcome) for e in trail] == [
        ("dr-lee", "reidentification.request", "success"),
        ("officer-kim", "reidentification.approve", "success"),
        ("dr-lee", "reidentification.reveal", "success"),
    ]
    assert all(e.source == "cli" for e in trail)
    assert all(e.detail["os_user"] == "operator" for e in trail)
    assert IDENTITY not in json.dumps([e.detail for e in trail])
    assert audit_log.verify().ok


def test_cli_requester_cannot_approve_own(  # type: ignore[no-untyped-def]
    staff, audit_log, pseudonym, capsys
):
    login(staff, "both-roles", ["reid-requesters", "reid-approvers"])
    _, out, _ = run(capsys, "request", pseudonym, "--reason", "x", "--as", "both-roles")
    rid = request_id(out)

    status, _, err = run(capsys, "approve", rid, "--as", "both-roles")

    assert status == 1
    assert f"'both-roles' made request {rid} and so cannot approve it" in err
    assert "a second person with the approver role must decide" in err
    assert list(audit_log.events())[-1].outcome == "denied"


def test_cli_non_member_cannot_request(  # type: ignore[no-untyped-def]
    staff, pseudonym, capsys
):
    status, _, err = run(
        capsys, "request", pseudonym, "--reason", "curious", "--as", "mallory"
    )

    assert status == 1
    assert "'mallory' does not have the re-identification requester role" in err
    assert "group 'reid-requesters'" in err


def test_cli_approver_without_role(  # type: ignore[no-untyped-def]
    staff, pseudonym, capsys
):
    _, out, _ = run(capsys, "request", pseudonym, "--reason", "x", "--as", "dr-lee")
    rid = request_id(out)

    status, _, err = run(capsys, "approve", rid, "--as", "mallory")

    assert status == 1
    assert "'mallory' does not have the re-identification approver role" in err


def test_cli_reveal_rejections(  # type: ignore[no-untyped-def]
    staff, pseudonym, capsys
):
    _, out, _ = run(capsys, "request", pseudonym, "--reason", "x", "--as", "dr-lee")
    rid = request_id(out)

    status, out, err = run(capsys, "reveal", rid, "--as", "dr-lee")
    assert status == 1
    assert out == ""
    assert "has not been approved yet" in err

    run(capsys, "approve", rid, "--as", "officer-kim")
    status, out, err = run(capsys, "reveal", rid, "--as", "officer-kim")
    assert status == 1
    assert out == ""
    assert f"request {rid} was made by 'dr-lee'" in err

    assert run(capsys, "reveal", rid, "--as", "dr-lee")[0] == 0
    status, out, err = run(capsys, "reveal", rid, "--as", "dr-lee")
    assert status == 1
    assert out == ""
    assert "already revealed" in err


def test_cli_reveal_after_expiry(  # type: ignore[no-untyped-def]
    staff, pseudonym, capsys
):
    _, out, _ = run(capsys, "request", pseudonym, "--reason", "x", "--as", "dr-lee")
    rid = request_id(out)
    run(capsys, "approve", rid, "--as", "officer-kim")
    with staff.session() as session:
        session.get(ReidentificationRequest, rid).expires_at = utcnow()

    status, out, err = run(capsys, "reveal", rid, "--as", "dr-lee")

    assert status == 1
    assert out == ""
    assert f"request {rid} is expired" in err
    assert "make a new request" in err
    _, out, _ = run(capsys, "list", "--status", "expired")
    assert rid in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["request", "Jane Doe", "--reason", "x"],
            "pseudonym 'Jane Doe' is invalid; expected 32 lower-case hex digits",
        ),
        (
            ["request", "a" * 32, "--reason", "x"],
            f"pseudonym {'a' * 32} has no mapping entry",
        ),
        (["request", "{pseudonym}", "--reason", " "], "needs a reason"),
        (["approve", "b" * 32], f"request {'b' * 32} not found"),
        (["reveal", "nope"], "request id 'nope' is invalid"),
        (["deny", "c" * 32, "--reason", "no"], "enclave reid list"),
    ],
)
def test_cli_invalid_values(  # type: ignore[no-untyped-def]
    staff, pseudonym, capsys, argv, message
):
    argv = [part.format(pseudonym=pseudonym) for part in argv]
    actor = "officer-kim" if argv[0] in ("approve", "deny") else "dr-lee"

    status, out, err = run(capsys, *argv, "--as", actor)

    assert status == 1
    assert out == ""
    assert message in err


def test_cli_deny_and_withdraw(  # type: ignore[no-untyped-def]
    staff, audit_log, pseudonym, capsys
):
    _, out, _ = run(capsys, "request", pseudonym, "--reason", "x", "--as", "dr-lee")
    denied = request_id(out)
    _, out, _ = run(capsys, "request", pseudonym, "--reason", "y", "--as", "dr-lee")
    withdrawn = request_id(out)

    status, out, _ = run(
        capsys, "deny", denied, "--reason", "not justified", "--as", "officer-kim"
    )
    assert status == 0
    assert out.strip() == f"request {denied} denied"
    status, out, _ = run(capsys, "withdraw", withdrawn, "--as", "dr-lee")
    assert status == 0
    assert out.strip() == f"request {withdrawn} withdrawn"

    _, out, _ = run(capsys, "list", "--json")
    statuses = {entry["id"]: entry["status"] for entry in json.loads(out)}
    assert statuses == {denied: "denied", withdrawn: "withdrawn"}
    _, out, _ = run(capsys, "list")
    assert out.splitlines()[0].split() == [
        "ID",
        "STATUS",
        "PSEUDONYM",
        "REQUESTER",
        "APPROVER",
        "EXPIRES",
    ]
    assert len(out.splitlines()) == 3
    _, out, _ = run(capsys, "list", "--status", "pending")
    assert out.strip() == "no re-identification requests"


def test_cli_groups_from_environment(  # type: ignore[no-untyped-def]
    staff, pseudonym, capsys, monkeypatch
):
    monkeypatch.setenv("ENCLAVE_REID_REQUESTER_GROUP", "radiology-reid")
    login(staff, "dr-ray", ["radiology-reid"])

    status, _, err = run(
        capsys, "request", pseudonym, "--reason", "x", "--as", "dr-lee"
    )
    assert status == 1
    assert "group 'radiology-reid'" in err
    status, _, _ = run(capsys, "request", pseudonym, "--reason", "x", "--as", "dr-ray")
    assert status == 0

    monkeypatch.setenv("ENCLAVE_REID_REVEAL_HOURS", "later")
    status, _, err = run(capsys, "list")
    assert status == 1
    assert "ENCLAVE_REID_REVEAL_HOURS='later' is not a number of hours above 0" in err


def test_cli_on_each_database(  # type: ignore[no-untyped-def]
    db_url, settings, keyring, audit_key, capsys, monkeypatch
):
    monkeypatch.setenv("ENCLAVE_DB_URL", db_url)
    catalog = Catalog(db_url)
    catalog.upgrade()
    login(catalog, "dr-lee", ["reid-requesters"])
    login(catalog, "officer-kim", ["reid-approvers"])
    store = PseudonymStore(settings.home / "pseudonyms", keyring)
    value = store.pseudonym("asset-9", namespace="asset")
    store.record(value, {"asset_id": "asset-9"})

    _, out, _ = run(capsys, "request", value, "--reason", "x", "--as", "dr-lee")
    rid = request_id(out)
    assert run(capsys, "approve", rid, "--as", "dr-lee")[0] == 1
    assert run(capsys, "approve", rid, "--as", "officer-kim")[0] == 0
    status, out, _ = run(capsys, "reveal", rid, "--as", "dr-lee")

    assert status == 0
    assert json.loads(out) == {"asset_id": "asset-9"}
    report = AuditLog(catalog, audit_key).verify()
    assert report.ok, str(report)
    assert report.count == 4
    catalog.dispose()


def test_cli_reveals_dicom_derivative(  # type: ignore[no-untyped-def]
    staff, vault, audit_log, ultrasound_path, capsys
):
    from enclave.catalog.models import Asset

    source, dataset = ingest_and_derive(
        staff,
        vault,
        audit_log,
        ultrasound_path,
        profile="ai-diagnosis",
        dataset_name="echo-ai",
    )
    with staff.session() as session:
        derivative = session.get(Asset, dataset.items[0].asset_id)
        subject = derivative.deid_report["identifiers"]["subject"]

    _, out, _ = run(capsys, "request", subject, "--reason", "x", "--as", "dr-lee")
    rid = request_id(out)
    run(capsys, "approve", rid, "--as", "officer-kim")
    status, out, _ = run(capsys, "reveal", rid, "--as", "dr-lee")

    assert status == 0
    assert json.loads(out) == {"asset_id": source.id, "dataset": "echo-ai"}
    assert audit_log.verify().ok


def test_cli_reveals_dicom_uid(  # type: ignore[no-untyped-def]
    staff, vault, audit_log, ultrasound_path, capsys
):
    import io

    import pydicom

    from enclave.catalog.models import Asset

    source, dataset = ingest_and_derive(
        staff,
        vault,
        audit_log,
        ultrasound_path,
        profile="ai-diagnosis",
        dataset_name="echo-ai",
    )
    with staff.session() as session:
        derivative = session.get(Asset, dataset.items[0].asset_id)
        key = derivative.data_key
        data = vault.read_bytes(derivative.blob_id, key.master_key_id, key.wrapped_key)
    replaced = pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID
    original = pydicom.dcmread(ultrasound_path).StudyInstanceUID
    assert replaced != original

    status, _, err = run(
        capsys, "request", "--dicom-uid", original, "--reason", "x", "--as", "dr-lee"
    )
    assert status == 1
    assert f"DICOM UID {original!r} has no mapping entry" in err
    _, out, _ = run(
        capsys, "request", "--dicom-uid", replaced, "--reason", "x", "--as", "dr-lee"
    )
    rid = request_id(out)
    run(capsys, "approve", rid, "--as", "officer-kim")
    status, out, _ = run(capsys, "reveal", rid, "--as", "dr-lee")

    assert status == 0
    assert json.loads(out) == {"dicom_uid": original, "replacement": replaced}


def test_cli_request_needs_subject(staff, capsys):  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main(["reid", "request", "--reason", "x", "--as", "dr-lee"])

    assert "one of the arguments pseudonym --dicom-uid is required" in (
        capsys.readouterr().err
    )
