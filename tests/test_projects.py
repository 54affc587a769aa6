"""Project lifecycle, reviewer rules and the read check, on every database."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Category, Dataset, ProjectStatus
from enclave.cli import main
from enclave.errors import NotFound, PermissionDenied, ValidationError
from enclave.ethics.acceptance import accept_agreement
from enclave.projects import (
    approve_project,
    authorize_read,
    create_project,
    list_projects,
    reject_project,
    submit_project,
    terminate_project,
)

START = dt.date(2027, 1, 1)
END = dt.date(2027, 12, 31)
DURING = dt.date(2027, 6, 1)


def _add_dataset(catalog: Catalog, name: str, level: int = 3) -> None:
    with catalog.session() as session:
        session.add(
            Dataset(
                name=name,
                category=Category.DIAGNOSIS,
                level=level,
                profile="baseline",
                created_by="steward",
            )
        )


def _create(catalog: Catalog, audit: AuditLog, name: str = "carphone-study", **kw):  # type: ignore[no-untyped-def]
    values = dict(
        name=name,
        title="Driver attention",
        purpose="Measure gaze in car videos",
        pi="alice",
        members=["bob"],
        datasets=["carphone"],
        starts_on=START,
        ends_on=END,
        created_by="steward",
        audit=audit,
    )
    values.update(kw)
    with catalog.session(immediate=True) as session:
        return create_project(session, **values)


def _approve_all(
    catalog: Catalog, audit: AuditLog, name: str = "carphone-study"
) -> None:
    with catalog.session(immediate=True) as session:
        submit_project(session, name, "alice", audit=audit)
    for reviewer in ("carol", "dave"):
        with catalog.session(immediate=True) as session:
            approve_project(session, name, reviewer, audit=audit)


@pytest.fixture
def setup(any_catalog: Catalog, any_audit_log: AuditLog) -> tuple[Catalog, AuditLog]:
    _add_dataset(any_catalog, "carphone")
    return any_catalog, any_audit_log


def test_lifecycle_to_approved(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)

    _approve_all(catalog, audit)

    with catalog.session() as session:
        (project,) = list_projects(session)
        assert project.status == ProjectStatus.APPROVED
        assert project.approved_by == "dave"
        assert {m.username for m in project.members} == {"alice", "bob"}
    actions = [e.action for e in audit.events(project="carphone-study")]
    assert actions == [
        "project.create",
        "project.submit",
        "project.approve",
        "project.approve",
    ]
    assert audit.verify().ok


def test_level_3_needs_two_approvals(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)
    with catalog.session(immediate=True) as session:
        submit_project(session, "carphone-study", "alice", audit=audit)

    with catalog.session(immediate=True) as session:
        project = approve_project(session, "carphone-study", "carol", audit=audit)
        assert project.status == ProjectStatus.SUBMITTED

    (event,) = audit.events(action="project.approve")
    assert event.detail == {"status": "submitted", "approvals": 1, "required": 2}


def test_approver_twice_rejected(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)
    with catalog.session(immediate=True) as session:
        submit_project(session, "carphone-study", "alice", audit=audit)
        approve_project(session, "carphone-study", "carol", audit=audit)

    with pytest.raises(ValidationError, match="already approved"):
        with catalog.session(immediate=True) as session:
            approve_project(session, "carphone-study", "carol", audit=audit)


@pytest.mark.parametrize("reviewer", ["alice", "bob", "steward"])
def test_pi_member_applicant_cannot_approve(setup, reviewer: str) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)
    with catalog.session(immediate=True) as session:
        submit_project(session, "carphone-study", "alice", audit=audit)

    with pytest.raises(PermissionDenied, match="cannot review"):
        with catalog.session(immediate=True) as session:
            approve_project(session, "carphone-study", reviewer, audit=audit)
    with pytest.raises(PermissionDenied, match="cannot review"):
        with catalog.session(immediate=True) as session:
            reject_project(
                session, "carphone-study", reviewer, audit=audit, reason="no"
            )


def test_approve_draft_rejected(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)

    with pytest.raises(ValidationError, match="is draft; only a submitted project"):
        with catalog.session(immediate=True) as session:
            approve_project(session, "carphone-study", "carol", audit=audit)


def test_submit_by_outsider_denied(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)

    with pytest.raises(PermissionDenied, match="may not submit"):
        with catalog.session(immediate=True) as session:
            submit_project(session, "carphone-study", "mallory", audit=audit)


def test_reject_records_reason(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)
    with catalog.session(immediate=True) as session:
        submit_project(session, "carphone-study", "alice", audit=audit)

    with catalog.session(immediate=True) as session:
        project = reject_project(
            session, "carphone-study", "carol", audit=audit, reason="no consent"
        )
        assert project.status == ProjectStatus.REJECTED
        assert project.end_reason == "no consent"
    (event,) = audit.events(action="project.reject")
    assert event.detail == {"status": "rejected", "reason": "no consent"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Bad_Name"}, "invalid project name 'Bad_Name'"),
        ({"name": "ab"}, "invalid project name 'ab'"),
        ({"ends_on": START}, "end date 2027-01-01 is not after start date 2027-01-01"),
        ({"starts_on": "2027-13-01"}, "invalid start date '2027-13-01'"),
        ({"datasets": []}, "at least one dataset"),
        ({"title": "  "}, "the title is missing"),
        ({"deid_profile": "none"}, "unknown de-identification profile 'none'"),
        ({"pi": "alice smith"}, "invalid principal investigator 'alice smith'"),
    ],
)
def test_create_rejects_invalid_values(setup, changes, message) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup

    with pytest.raises(ValidationError, match=message):
        _create(catalog, audit, **changes)

    with catalog.session() as session:
        assert list_projects(session) == []
    assert audit.events() == []


def test_create_unknown_dataset(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup

    with pytest.raises(NotFound, match="datasets not found: nope"):
        _create(catalog, audit, datasets=["carphone", "nope"])


def test_create_duplicate_name(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)

    with pytest.raises(ValidationError, match="already exists"):
        _create(catalog, audit)


def _accept_agreement(catalog: Catalog, audit: AuditLog, *users: str) -> None:
    for user in users:
        with catalog.session(immediate=True) as session:
            accept_agreement(session, audit, "carphone-study", username=user)


def test_authorize_read_allows_member(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)
    _approve_all(catalog, audit)
    _accept_agreement(catalog, audit, "alice", "bob")

    with catalog.session() as session:
        for user in ("alice", "bob"):
            project, dataset = authorize_read(session, user, "carphone", today=DURING)
            assert project.name == "carphone-study"
            assert dataset.name == "carphone"
        authorize_read(session, "bob", "carphone", today=START)
        authorize_read(session, "bob", "carphone", today=END)


def test_authorize_read_denials(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _add_dataset(catalog, "other")
    _create(catalog, audit)

    with catalog.session() as session:
        with pytest.raises(PermissionDenied, match="'mallory' is not a member"):
            authorize_read(session, "mallory", "carphone", today=DURING)
        with pytest.raises(PermissionDenied, match="not approved \\(status draft\\)"):
            authorize_read(session, "bob", "carphone", today=DURING)
        with pytest.raises(PermissionDenied, match="'other' is not granted"):
            authorize_read(session, "bob", "other", today=DURING)
        with pytest.raises(NotFound, match="'missing' not found"):
            authorize_read(session, "bob", "missing", today=DURING)

    _approve_all(catalog, audit)
    with catalog.session() as session:
        with pytest.raises(PermissionDenied, match="not accepted the current data use"):
            authorize_read(session, "bob", "carphone", today=DURING)
    _accept_agreement(catalog, audit, "bob")
    with catalog.session() as session:
        with pytest.raises(PermissionDenied, match="ended on 2027-12-31"):
            authorize_read(session, "bob", "carphone", today=END + dt.timedelta(1))
        with pytest.raises(PermissionDenied, match="starts on 2027-01-01"):
            authorize_read(session, "bob", "carphone", today=START - dt.timedelta(1))


def test_terminate_revokes_access(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)
    _approve_all(catalog, audit)

    with catalog.session(immediate=True) as session:
        terminate_project(
            session,
            "carphone-study",
            "steward",
            audit=audit,
            reason="consent withdrawn",
        )

    with catalog.session() as session:
        with pytest.raises(PermissionDenied, match="was terminated on"):
            authorize_read(session, "bob", "carphone", today=DURING)
    (event,) = audit.events(action="project.terminate")
    assert event.detail == {"status": "terminated", "reason": "consent withdrawn"}
    with pytest.raises(ValidationError, match="is terminated"):
        with catalog.session(immediate=True) as session:
            terminate_project(
                session, "carphone-study", "steward", audit=audit, reason="again"
            )


def test_level_1_needs_one_approval(
    any_catalog: Catalog, any_audit_log: AuditLog
) -> None:
    _add_dataset(any_catalog, "promo", level=1)
    _create(any_catalog, any_audit_log, datasets=["promo"])
    with any_catalog.session(immediate=True) as session:
        submit_project(session, "carphone-study", "alice", audit=any_audit_log)

    with any_catalog.session(immediate=True) as session:
        project = approve_project(
            session, "carphone-study", "carol", audit=any_audit_log
        )
        assert project.status == ProjectStatus.APPROVED


# The ``enclave project`` command, on the SQLite catalog of the settings.


def test_cli_lifecycle(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_dataset(catalog, "carphone")
    create = [
        "project",
        "create",
        "gaze-study",
        "--title",
        "Driver gaze",
        "--purpose",
        "Measure gaze",
        "--pi",
        "alice",
        "--member",
        "bob",
        "--member",
        "erin",
        "--dataset",
        "carphone",
        "--start",
        "2027-01-01",
        "--end",
        "2027-06-30",
        "--ethics",
        "EC-2026-17",
        "--as",
        "steward",
    ]

    assert main(create) == 0
    assert main(["project", "submit", "gaze-study", "--as", "alice"]) == 0
    assert main(["project", "approve", "gaze-study", "--as", "carol"]) == 0
    assert "submitted (1 of 2 approvals)" in capsys.readouterr().out
    assert main(["project", "approve", "gaze-study", "--as", "dave"]) == 0
    assert capsys.readouterr().out.strip() == "project gaze-study is approved"

    assert main(["project", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["status"] == "approved"
    assert listed["members"] == ["bob", "erin"]
    assert listed["datasets"] == ["carphone"]
    assert listed["approvals"] == ["carol", "dave"]
    assert listed["ethics_ref"] == "EC-2026-17"
    actors = [(e.actor, e.action) for e in audit_log.events()]
    assert actors == [
        ("steward", "project.create"),
        ("alice", "project.submit"),
        ("carol", "project.approve"),
        ("dave", "project.approve"),
    ]


def test_cli_actor_defaults_to_os_user(
    catalog: Catalog,
    audit_log: AuditLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _add_dataset(catalog, "carphone")
    monkeypatch.setattr("getpass.getuser", lambda: "osuser")
    create = ["project", "create", "p-1", "--title", "t", "--purpose", "p"]
    create += ["--pi", "alice", "--dataset", "carphone"]
    create += ["--start", "2027-01-01", "--end", "2027-02-01"]

    assert main(create) == 0

    (event,) = audit_log.events()
    assert event.actor == "osuser"


def test_cli_member_cannot_approve(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_dataset(catalog, "carphone")
    _create(catalog, audit_log)
    assert main(["project", "submit", "carphone-study", "--as", "alice"]) == 0

    status = main(["project", "approve", "carphone-study", "--as", "bob"])

    assert status == 1
    assert "'bob' is a member of 'carphone-study'" in capsys.readouterr().err


def test_cli_bad_dates(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_dataset(catalog, "carphone")
    create = ["project", "create", "p-1", "--title", "t", "--purpose", "p"]
    create += ["--pi", "alice", "--dataset", "carphone"]
    create += ["--start", "2027-03-01", "--end", "2027-02-01"]

    status = main(create)

    assert status == 1
    assert "end date 2027-02-01 is not after start date 2027-03-01" in (
        capsys.readouterr().err
    )


def test_cli_terminate_needs_reason(catalog: Catalog, audit_log: AuditLog) -> None:
    with pytest.raises(SystemExit):
        main(["project", "terminate", "carphone-study"])


def test_cli_reject_and_list_text(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_dataset(catalog, "carphone")
    _create(catalog, audit_log)
    assert main(["project", "submit", "carphone-study", "--as", "steward"]) == 0

    status = main(
        [
            "project",
            "reject",
            "carphone-study",
            "--reason",
            "no consent",
            "--as",
            "carol",
        ]
    )

    assert status == 0
    capsys.readouterr()
    assert main(["project", "list", "--status", "rejected"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["carphone-study", "rejected", "alice"]


def test_cli_before_init(settings, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    status = main(["project", "list"])

    assert status == 1
    assert "run 'enclave init'" in capsys.readouterr().err


def test_concurrent_approvals_both_count(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup
    _create(catalog, audit)
    with catalog.session(immediate=True) as session:
        submit_project(session, "carphone-study", "alice", audit=audit)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def approve(reviewer: str) -> None:
        barrier.wait()
        try:
            with catalog.session(immediate=True) as session:
                approve_project(session, "carphone-study", reviewer, audit=audit)
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=approve, args=(r,)) for r in ("carol", "dave")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    with catalog.session() as session:
        (project,) = list_projects(session)
        assert project.status == ProjectStatus.APPROVED
        assert len(project.approvals) == 2
    assert audit.verify().ok


def test_dataset_preparer_cannot_be_member(setup) -> None:  # type: ignore[no-untyped-def]
    catalog, audit = setup

    with pytest.raises(PermissionDenied, match="'carphone' and so may not be a member"):
        _create(catalog, audit, members=["bob", "steward"])
    with pytest.raises(PermissionDenied, match="de-identified dataset"):
        _create(catalog, audit, pi="steward", members=[])

    with catalog.session() as session:
        assert list_projects(session) == []
