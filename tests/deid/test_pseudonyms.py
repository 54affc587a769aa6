"""Keyed pseudonyms, the encrypted mapping and the two-person re-identification."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import (
    AuditEvent,
    ReidentificationRequest,
    ReidentificationStatus,
    utcnow,
)
from enclave.deid.pseudonyms import (
    PseudonymStore,
    Reidentification,
    ReidentificationPolicy,
    effective_status,
)
from enclave.errors import (
    AuditUnavailable,
    ConfigurationError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from tests.deid.support import LOGIN_LIFETIME, ingest_and_derive, login

REQUESTER_GROUP = "reid-requesters"
APPROVER_GROUP = "reid-approvers"
IDENTITY = "asset-1-secret-identity"


class Clock:
    """A settable UTC clock, so expiry can be tested without waiting."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def events(audit: AuditLog, prefix: str = "reidentification.") -> list[AuditEvent]:
    with audit.catalog.session() as session:
        return [
            event
            for event in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))
            if event.action.startswith(prefix)
        ]


def stored(catalog: Catalog, request_id: str) -> ReidentificationRequest:
    with catalog.session() as session:
        request = session.get(ReidentificationRequest, request_id)
        assert request is not None
        return request


@pytest.fixture
def store(tmp_path: Path, keyring) -> PseudonymStore:  # type: ignore[no-untyped-def]
    return PseudonymStore(tmp_path / "pseudonyms", keyring)


@pytest.fixture
def pseudonym(store: PseudonymStore) -> str:
    value = store.pseudonym("asset-1", namespace="asset")
    store.record(value, {"asset_id": IDENTITY})
    return value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def staff(any_catalog: Catalog, clock: Clock) -> Catalog:
    """Logins of the designated staff: ``dr-lee`` requests, the officers approve."""
    login(any_catalog, "dr-lee", [REQUESTER_GROUP, "researchers"], at=clock.now)
    login(any_catalog, "officer-kim", [APPROVER_GROUP], at=clock.now)
    login(any_catalog, "officer-ng", [APPROVER_GROUP], at=clock.now)
    login(any_catalog, "both-roles", [REQUESTER_GROUP, APPROVER_GROUP], at=clock.now)
    login(any_catalog, "mallory", ["researchers"], at=clock.now)
    return any_catalog


@pytest.fixture
def workflow(  # type: ignore[no-untyped-def]
    staff: Catalog, any_audit_log: AuditLog, store: PseudonymStore, keyring, clock
) -> Reidentification:
    return Reidentification(
        staff, any_audit_log, store.root, keyring, operator="root", clock=clock
    )


def approved(workflow: Reidentification, pseudonym: str) -> str:
    request = workflow.request(
        pseudonym, requester="dr-lee", reason="incidental finding on review"
    )
    workflow.approve(request.id, approver="officer-kim")
    return request.id


# Keys and the encrypted mapping.


def test_pseudonym_keyed_and_stable(store, tmp_path, keyring):
    first = store.pseudonym("asset-1", namespace="asset")

    assert first == store.pseudonym("asset-1", namespace="asset")
    assert first != store.pseudonym("asset-2", namespace="asset")
    assert first != store.pseudonym("asset-1", namespace="dicom-uid")
    assert (
        PseudonymStore(tmp_path / "pseudonyms", keyring).pseudonym(
            "asset-1", namespace="asset"
        )
        == first
    )
    assert (
        PseudonymStore(tmp_path / "other", keyring).pseudonym(
            "asset-1", namespace="asset"
        )
        != first
    )


def test_mapping_encrypted_at_rest(store):
    pseudonym = store.pseudonym("asset-1", namespace="asset")

    store.record(pseudonym, {"asset_id": "asset-1-secret"})

    blob = (store.root / f"{pseudonym}.bin").read_bytes()
    assert b"asset-1-secret" not in blob
    assert (store.root / f"{pseudonym}.bin").stat().st_mode & 0o077 == 0
    assert store.root.stat().st_mode & 0o077 == 0


def test_store_without_keys_not_created(tmp_path, keyring):
    with pytest.raises(NotFound, match="no pseudonym keys"):
        PseudonymStore(tmp_path / "missing", keyring, create=False)

    assert not (tmp_path / "missing").exists()


# The workflow, on SQLite, PostgreSQL and MariaDB.


def test_workflow_reveals_once(workflow, any_audit_log, pseudonym):
    request = workflow.request(
        pseudonym, requester="dr-lee", reason="incidental finding on review"
    )
    assert request.status == ReidentificationStatus.PENDING

    decided = workflow.approve(request.id, approver="officer-kim")
    assert decided.status == ReidentificationStatus.APPROVED
    assert decided.approver == "officer-kim"

    entry = workflow.reveal(request.id, requester="dr-lee")

    assert entry == {"asset_id": IDENTITY}
    row = stored(workflow.catalog, request.id)
    assert row.status == ReidentificationStatus.REVEALED
    assert row.revealed_at is not None
    trail = events(any_audit_log)
    assert [(e.action, e.outcome, e.actor) for e in trail] == [
        ("reidentification.request", "success", "dr-lee"),
        ("reidentification.approve", "success", "officer-kim"),
        ("reidentification.reveal", "success", "dr-lee"),
    ]
    assert {e.target for e in trail} == {request.id}
    assert all(e.detail["pseudonym"] == pseudonym for e in trail)
    assert all(e.detail["os_user"] == "root" for e in trail)
    assert trail[0].detail["request_reason"] == "incidental finding on review"


def test_identity_never_in_audit_trail(workflow, any_audit_log, pseudonym):
    request_id = approved(workflow, pseudonym)
    workflow.reveal(request_id, requester="dr-lee")

    with any_audit_log.catalog.session() as session:
        rows = list(session.scalars(select(AuditEvent)))
    assert rows
    for row in rows:
        assert IDENTITY not in json.dumps(row.detail)
        assert IDENTITY not in str(row.target)


def test_audit_chain_verifies_after_workflow(workflow, any_audit_log, pseudonym):
    request_id = approved(workflow, pseudonym)
    workflow.reveal(request_id, requester="dr-lee")
    with pytest.raises(PermissionDenied):
        workflow.reveal(request_id, requester="dr-lee")

    report = any_audit_log.verify()

    assert report.ok, str(report)
    assert report.count == 4


def test_requester_cannot_approve_own(workflow, any_audit_log, pseudonym):
    request = workflow.request(pseudonym, requester="both-roles", reason="finding")

    with pytest.raises(PermissionDenied, match="second person"):
        workflow.approve(request.id, approver="both-roles")
    with pytest.raises(PermissionDenied, match="second person"):
        workflow.approve(request.id, approver="BOTH-ROLES")
    with pytest.raises(PermissionDenied, match="second person"):
        workflow.deny(request.id, approver="both-roles", reason="no")

    assert stored(workflow.catalog, request.id).status == "pending"
    last = events(any_audit_log)[-1]
    assert last.action == "reidentification.deny"
    assert last.outcome == "denied"
    assert last.detail["reason"] == "the requester cannot decide their own request"


def test_requester_cannot_reveal_unapproved_own(workflow, pseudonym):
    request = workflow.request(pseudonym, requester="both-roles", reason="finding")

    with pytest.raises(PermissionDenied, match="not been approved"):
        workflow.reveal(request.id, requester="both-roles")


@pytest.mark.parametrize(
    ("username", "setup", "message", "audited_reason"),
    [
        ("mallory", None, "does not have", "not in group reid-requesters"),
        ("officer-kim", None, "does not have", "not in group reid-requesters"),
        ("nobody", None, "no hub login", "no hub login on record"),
        ("dr-pwd", "password-only", "second factor", "hub login without a second"),
        ("dr-old", "expired", "expired at", "hub login expired"),
    ],
)
def test_request_without_role_rejected(  # type: ignore[no-untyped-def]
    workflow, any_audit_log, pseudonym, clock, username, setup, message, audited_reason
):
    if setup == "password-only":
        login(workflow.catalog, username, [REQUESTER_GROUP], mfa=False, at=clock.now)
    elif setup == "expired":
        login(
            workflow.catalog,
            username,
            [REQUESTER_GROUP],
            at=clock.now - LOGIN_LIFETIME - dt.timedelta(minutes=1),
        )

    with pytest.raises(PermissionDenied, match=message):
        workflow.request(pseudonym, requester=username, reason="curious")

    with workflow.catalog.session() as session:
        assert session.scalars(select(ReidentificationRequest)).all() == []
    event = events(any_audit_log)[-1]
    assert event.action == "reidentification.request"
    assert event.outcome == "denied"
    assert event.actor == username
    assert event.target is None
    assert event.detail["reason"].startswith(audited_reason)


@pytest.mark.parametrize("approver", ["mallory", "dr-lee-2", "nobody"])
def test_approval_by_non_approver(  # type: ignore[no-untyped-def]
    workflow, any_audit_log, pseudonym, clock, approver
):
    # dr-lee-2 has the requester role only, which gives no right to approve.
    login(workflow.catalog, "dr-lee-2", [REQUESTER_GROUP], at=clock.now)
    request = workflow.request(pseudonym, requester="dr-lee", reason="finding")

    with pytest.raises(PermissionDenied):
        workflow.approve(request.id, approver=approver)

    assert stored(workflow.catalog, request.id).status == "pending"
    event = events(any_audit_log)[-1]
    assert event.action == "reidentification.approve"
    assert event.outcome == "denied"
    assert event.actor == approver
    assert event.target == request.id


def test_approver_without_mfa_rejected(workflow, pseudonym, clock):
    login(workflow.catalog, "officer-pwd", [APPROVER_GROUP], mfa=False, at=clock.now)
    request = workflow.request(pseudonym, requester="dr-lee", reason="finding")

    with pytest.raises(PermissionDenied, match="second factor"):
        workflow.approve(request.id, approver="officer-pwd")


def test_reveal_before_approval(workflow, any_audit_log, pseudonym, monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr(
        PseudonymStore, "_open", lambda self, p: opened.append(p) or {}
    )
    request = workflow.request(pseudonym, requester="dr-lee", reason="finding")

    with pytest.raises(PermissionDenied, match="not been approved"):
        workflow.reveal(request.id, requester="dr-lee")

    assert opened == []
    assert stored(workflow.catalog, request.id).status == "pending"
    event = events(any_audit_log)[-1]
    assert event.action == "reidentification.reveal"
    assert event.outcome == "denied"
    assert event.detail["reason"] == "request is pending"


def test_reveal_twice(workflow, any_audit_log, pseudonym):
    request_id = approved(workflow, pseudonym)
    workflow.reveal(request_id, requester="dr-lee")

    with pytest.raises(PermissionDenied, match="already revealed"):
        workflow.reveal(request_id, requester="dr-lee")

    outcomes = [
        e.outcome for e in events(any_audit_log) if e.action.endswith(".reveal")
    ]
    assert outcomes == ["success", "denied"]


def test_reveal_by_other_person(workflow, pseudonym):
    request_id = approved(workflow, pseudonym)

    for person in ("officer-kim", "both-roles", "mallory"):
        with pytest.raises(PermissionDenied, match="only the requester"):
            workflow.reveal(request_id, requester=person)

    assert stored(workflow.catalog, request_id).status == "approved"


def test_reveal_after_expiry(workflow, any_audit_log, pseudonym, clock):
    request_id = approved(workflow, pseudonym)
    approval = stored(workflow.catalog, request_id)
    assert approval.expires_at == clock.now + dt.timedelta(hours=24)
    clock.advance(hours=24, seconds=1)
    # The requester's login would have expired as well, so log in again.
    login(workflow.catalog, "dr-lee", [REQUESTER_GROUP], at=clock.now)

    with pytest.raises(PermissionDenied, match="expired"):
        workflow.reveal(request_id, requester="dr-lee")

    assert stored(workflow.catalog, request_id).status == "expired"
    event = events(any_audit_log)[-1]
    assert event.outcome == "denied"
    assert event.detail["reason"] == "request is expired"


def test_reveal_needs_current_role(workflow, pseudonym, clock):
    request_id = approved(workflow, pseudonym)
    # The institution removed dr-lee from the group, and the next login shows it.
    login(workflow.catalog, "dr-lee", ["researchers"], at=clock.now)

    with pytest.raises(PermissionDenied, match="does not have"):
        workflow.reveal(request_id, requester="dr-lee")

    assert stored(workflow.catalog, request_id).status == "approved"


def test_pending_request_expires(workflow, pseudonym, clock):
    request = workflow.request(pseudonym, requester="dr-lee", reason="finding")
    assert request.expires_at == clock.now + dt.timedelta(days=7)
    clock.advance(days=7)
    login(workflow.catalog, "officer-kim", [APPROVER_GROUP], at=clock.now)

    assert effective_status(stored(workflow.catalog, request.id), clock.now) == (
        ReidentificationStatus.EXPIRED
    )
    with pytest.raises(PermissionDenied, match="expired"):
        workflow.approve(request.id, approver="officer-kim")

    assert stored(workflow.catalog, request.id).status == "expired"


def test_configured_reveal_window(  # type: ignore[no-untyped-def]
    staff, any_audit_log, store, keyring, clock, pseudonym
):
    policy = ReidentificationPolicy(reveal_window=dt.timedelta(minutes=30))
    workflow = Reidentification(
        staff, any_audit_log, store.root, keyring, policy, clock=clock
    )
    request_id = approved(workflow, pseudonym)
    clock.advance(minutes=31)

    with pytest.raises(PermissionDenied, match="expired"):
        workflow.reveal(request_id, requester="dr-lee")


def test_shared_group_names_each_role(  # type: ignore[no-untyped-def]
    staff, any_audit_log, store, keyring, clock, pseudonym
):
    policy = ReidentificationPolicy(requester_group="reid", approver_group="reid")
    workflow = Reidentification(
        staff, any_audit_log, store.root, keyring, policy, clock=clock
    )

    with pytest.raises(PermissionDenied, match="requester role"):
        workflow.request(pseudonym, requester="mallory", reason="finding")


def test_deny_closes_request(workflow, any_audit_log, pseudonym):
    request = workflow.request(pseudonym, requester="dr-lee", reason="finding")

    with pytest.raises(ValidationError, match="needs a reason"):
        workflow.deny(request.id, approver="officer-kim", reason=" ")
    denied = workflow.deny(request.id, approver="officer-kim", reason="not justified")

    assert denied.status == ReidentificationStatus.DENIED
    assert denied.decision_reason == "not justified"
    with pytest.raises(PermissionDenied, match="is denied"):
        workflow.approve(request.id, approver="officer-ng")
    with pytest.raises(PermissionDenied, match="is denied"):
        workflow.reveal(request.id, requester="dr-lee")
    deny_event = [e for e in events(any_audit_log) if e.outcome == "success"][-1]
    assert deny_event.action == "reidentification.deny"
    assert deny_event.detail["reason"] == "not justified"


def test_withdraw_by_requester_only(workflow, pseudonym):
    request_id = approved(workflow, pseudonym)

    with pytest.raises(PermissionDenied, match="only the requester"):
        workflow.withdraw(request_id, requester="officer-kim")
    withdrawn = workflow.withdraw(request_id, requester="dr-lee")

    assert withdrawn.status == ReidentificationStatus.WITHDRAWN
    with pytest.raises(PermissionDenied, match="is withdrawn"):
        workflow.reveal(request_id, requester="dr-lee")


def test_approved_request_not_approved_again(workflow, pseudonym):
    request_id = approved(workflow, pseudonym)

    with pytest.raises(PermissionDenied, match="already approved by 'officer-kim'"):
        workflow.approve(request_id, approver="officer-ng")

    assert stored(workflow.catalog, request_id).approver == "officer-kim"


def test_request_needs_reason(workflow, any_audit_log, pseudonym):
    with pytest.raises(ValidationError, match="needs a reason"):
        workflow.request(pseudonym, requester="dr-lee", reason="  ")

    assert events(any_audit_log)[-1].detail["reason"] == "no reason given"


def test_request_reason_too_long(workflow, any_audit_log, pseudonym):
    with pytest.raises(ValidationError, match="has 5000 characters"):
        workflow.request(pseudonym, requester="dr-lee", reason="x" * 5000)

    event = events(any_audit_log)[-1]
    assert event.detail["reason"] == "reason too long"
    assert len(event.detail["request_reason"]) == 2000


def test_request_malformed_pseudonym(workflow, any_audit_log):
    typed = "Jane Doe 1970-01-01"

    with pytest.raises(ValidationError, match="32 lower-case hex"):
        workflow.request(typed, requester="dr-lee", reason="finding")

    event = events(any_audit_log)[-1]
    assert event.outcome == "denied"
    assert event.detail["reason"] == "malformed pseudonym"
    assert typed not in json.dumps(event.detail)


def test_request_unknown_pseudonym(workflow, any_audit_log):
    with pytest.raises(NotFound, match="has no mapping entry"):
        workflow.request("0" * 32, requester="dr-lee", reason="finding")

    event = events(any_audit_log)[-1]
    assert event.outcome == "denied"
    assert event.detail["pseudonym"] == "0" * 32


def test_unknown_and_malformed_request_ids(workflow, any_audit_log):
    with pytest.raises(NotFound, match="enclave reid list"):
        workflow.approve("f" * 32, approver="officer-kim")
    with pytest.raises(ValidationError, match="request id '../x' is invalid"):
        workflow.reveal("../x", requester="dr-lee")

    trail = events(any_audit_log)
    assert [(e.action, e.outcome) for e in trail] == [
        ("reidentification.approve", "denied"),
        ("reidentification.reveal", "denied"),
    ]
    assert trail[1].target is None


def test_invalid_actor_name_rejected(workflow, pseudonym):
    with pytest.raises(ValidationError, match="--as"):
        workflow.request(pseudonym, requester="dr lee", reason="finding")


def test_audit_unavailable_reveals_nothing(  # type: ignore[no-untyped-def]
    workflow, any_catalog, store, keyring, clock, pseudonym, monkeypatch
):
    request_id = approved(workflow, pseudonym)
    opened: list[str] = []
    real_open = PseudonymStore._open
    monkeypatch.setattr(
        PseudonymStore,
        "_open",
        lambda self, p: opened.append(p) or real_open(self, p),
    )
    # A trail under another key cannot extend the chain: appends raise.
    broken_audit = AuditLog(any_catalog, secrets.token_bytes(32))
    broken = Reidentification(
        any_catalog, broken_audit, store.root, keyring, clock=clock
    )

    with pytest.raises(AuditUnavailable):
        broken.reveal(request_id, requester="dr-lee")

    assert opened == []
    assert stored(any_catalog, request_id).status == "approved"
    assert workflow.reveal(request_id, requester="dr-lee") == {"asset_id": IDENTITY}
    assert opened == [pseudonym]


def test_unaudited_rejection_raises_unavailable(  # type: ignore[no-untyped-def]
    workflow, any_catalog, store, keyring, clock, pseudonym
):
    request = workflow.request(pseudonym, requester="dr-lee", reason="finding")
    broken_audit = AuditLog(any_catalog, secrets.token_bytes(32))
    broken = Reidentification(
        any_catalog, broken_audit, store.root, keyring, clock=clock
    )

    with pytest.raises(AuditUnavailable):
        broken.approve(request.id, approver="officer-kim")
    with pytest.raises(AuditUnavailable):
        broken.approve(request.id, approver="dr-lee")

    assert stored(any_catalog, request.id).status == "pending"


def test_tampered_entry_detected(workflow, any_audit_log, store, pseudonym):
    request_id = approved(workflow, pseudonym)
    path = store.root / f"{pseudonym}.bin"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))

    with pytest.raises(IntegrityError):
        workflow.reveal(request_id, requester="dr-lee")

    assert stored(workflow.catalog, request_id).status == "revealed"
    last = events(any_audit_log)[-1]
    assert last.action == "reidentification.reveal"
    assert last.outcome == "failure"
    assert any_audit_log.verify().ok


def _race(calls: list[Callable[[], object]]) -> tuple[list[object], list[Exception]]:
    barrier = threading.Barrier(len(calls))
    results: list[object] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            result = call()
        except Exception as exc:  # collected for the asserts below
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(result)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


def test_concurrent_approvals_change_once(workflow, any_audit_log, pseudonym):
    request = workflow.request(pseudonym, requester="dr-lee", reason="finding")

    results, errors = _race(
        [
            lambda: workflow.approve(request.id, approver="officer-kim"),
            lambda: workflow.approve(request.id, approver="officer-ng"),
            lambda: workflow.deny(request.id, approver="both-roles", reason="no"),
        ]
    )

    assert len(results) == 1
    assert len(errors) == 2
    assert all(isinstance(error, PermissionDenied) for error in errors), errors
    row = stored(workflow.catalog, request.id)
    assert row.version == 2
    decisions = [
        event
        for event in events(any_audit_log)
        if event.outcome == "success" and event.action != "reidentification.request"
    ]
    assert len(decisions) == 1
    assert decisions[0].actor == row.approver
    assert any_audit_log.verify().ok


def test_concurrent_reveals_return_once(workflow, any_audit_log, pseudonym):
    request_id = approved(workflow, pseudonym)

    results, errors = _race(
        [lambda: workflow.reveal(request_id, requester="dr-lee") for _ in range(3)]
    )

    assert results == [{"asset_id": IDENTITY}]
    assert len(errors) == 2
    assert all(isinstance(error, PermissionDenied) for error in errors), errors


def test_list_requests_by_status(workflow, pseudonym, clock):
    first = workflow.request(pseudonym, requester="dr-lee", reason="one")
    clock.advance(seconds=1)
    second_id = approved(workflow, pseudonym)

    listed = workflow.list_requests()
    pending = workflow.list_requests(ReidentificationStatus.PENDING)

    assert [r.id for r in listed] == [second_id, first.id]
    assert [r.id for r in pending] == [first.id]
    clock.advance(days=8)
    expired = workflow.list_requests(ReidentificationStatus.EXPIRED)
    assert {r.id for r in expired} == {first.id, second_id}


# The policy's configuration.


def test_policy_from_environ():
    policy = ReidentificationPolicy.from_environ(
        {
            "ENCLAVE_REID_REQUESTER_GROUP": "radiology-reid",
            "ENCLAVE_REID_APPROVER_GROUP": "privacy-office",
            "ENCLAVE_REID_PENDING_HOURS": "48",
            "ENCLAVE_REID_REVEAL_HOURS": "0.5",
        }
    )

    assert policy.requester_group == "radiology-reid"
    assert policy.approver_group == "privacy-office"
    assert policy.pending_lifetime == dt.timedelta(hours=48)
    assert policy.reveal_window == dt.timedelta(minutes=30)
    assert ReidentificationPolicy.from_environ({}) == ReidentificationPolicy()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENCLAVE_REID_REVEAL_HOURS", "0"),
        ("ENCLAVE_REID_REVEAL_HOURS", "-1"),
        ("ENCLAVE_REID_REVEAL_HOURS", "soon"),
        ("ENCLAVE_REID_PENDING_HOURS", "nan"),
        ("ENCLAVE_REID_PENDING_HOURS", "inf"),
        ("ENCLAVE_REID_PENDING_HOURS", "1e12"),
        ("ENCLAVE_REID_REVEAL_HOURS", "87601"),
        ("ENCLAVE_REID_APPROVER_GROUP", " "),
        ("ENCLAVE_REID_REQUESTER_GROUP", "two words"),
    ],
)
def test_policy_rejects_invalid_setting(name, value):
    with pytest.raises(ConfigurationError, match=name):
        ReidentificationPolicy.from_environ({name: value})


# End to end: an ai-diagnosis derivation yields a pseudonym that can be revealed.


def _reveal_subject(  # type: ignore[no-untyped-def]
    catalog, vault, audit_log, subject: str
) -> dict:
    login(catalog, "dr-lee", [REQUESTER_GROUP])
    login(catalog, "officer-kim", [APPROVER_GROUP])
    workflow = Reidentification(
        catalog, audit_log, vault.root.parent / "pseudonyms", vault.keyring
    )
    request = workflow.request(subject, requester="dr-lee", reason="audit")
    workflow.approve(request.id, approver="officer-kim")
    return workflow.reveal(request.id, requester="dr-lee")


def test_ai_diagnosis_derive_stores_mapping(catalog, vault, audit_log, synthetic_clip):
    from enclave.catalog.models import Asset

    clip = synthetic_clip("small.mp4", width=320, height=192, frames=6, faces=1)
    source, dataset = ingest_and_derive(
        catalog,
        vault,
        audit_log,
        clip.path,
        profile="ai-diagnosis",
        dataset_name="ai-set",
    )

    with catalog.session() as session:
        derivative = session.get(Asset, dataset.items[0].asset_id)
        assert derivative.source_id is None
        subject = derivative.deid_report["identifiers"]["subject"]
        assert source.id not in str(derivative.deid_report)
    entry = _reveal_subject(catalog, vault, audit_log, subject)
    assert entry["asset_id"] == source.id
    assert entry["dataset"] == "ai-set"
    assert audit_log.verify().ok


def test_new_tech_research_keeps_no_link(catalog, vault, audit_log, synthetic_clip):
    from enclave.catalog.models import Asset

    clip = synthetic_clip("small.mp4", width=320, height=192, frames=6, faces=1)
    source, dataset = ingest_and_derive(
        catalog,
        vault,
        audit_log,
        clip.path,
        profile="new-tech-research",
        dataset_name="open-set",
    )

    with catalog.session() as session:
        derivative = session.get(Asset, dataset.items[0].asset_id)
        assert derivative.source_id is None
        assert derivative.deid_report["identifiers"]["mode"] == "random"
        assert source.id not in str(derivative.deid_report)
    assert not (vault.root.parent / "pseudonyms").exists()


def test_ai_diagnosis_dicom_revealable(catalog, vault, audit_log, ultrasound_path):
    from enclave.catalog.models import Asset

    source, dataset = ingest_and_derive(
        catalog,
        vault,
        audit_log,
        ultrasound_path,
        profile="ai-diagnosis",
        dataset_name="echo-ai",
    )

    entries = sorted((vault.root.parent / "pseudonyms").glob("*.bin"))
    # One entry for the asset and at least one for a replaced DICOM UID.
    assert len(entries) >= 2
    with catalog.session() as session:
        derivative = session.get(Asset, dataset.items[0].asset_id)
        subject = derivative.deid_report["identifiers"]["subject"]
    entry = _reveal_subject(catalog, vault, audit_log, subject)
    assert entry == {"asset_id": source.id, "dataset": "echo-ai"}
