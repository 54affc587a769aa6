"""Revocation at a project's end, termination and suspension, on three databases."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from enclave import projects
from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import (
    Asset,
    AssetKind,
    Category,
    DataKey,
    MediaType,
    ProjectStatus,
)
from enclave.errors import PermissionDenied, ValidationError
from enclave.ethics import workflow
from enclave.ethics.models import AccessClosure, AccessNotice, WorkingCopy
from enclave.lifecycle.hub_client import HubClient, project_group
from enclave.lifecycle.revocation import run_revocation
from enclave.lifecycle.working_copies import record_working_copy
from tests.ethics.conftest import TODAY, add_datasets, make_application

from .fake_hub import SERVICE_TOKEN, FakeHub, LoopThread, running_fake_hub

END = TODAY + dt.timedelta(days=90)


@pytest.fixture
def catalog(any_catalog: Catalog) -> Catalog:
    add_datasets(any_catalog)
    return any_catalog


@pytest.fixture
def audit(catalog: Catalog, any_audit_log: AuditLog) -> AuditLog:
    return any_audit_log


@pytest.fixture
def fake_hub() -> Iterator[tuple[FakeHub, HubClient]]:
    loop = LoopThread()
    try:
        with running_fake_hub(loop) as (hub, api_url):
            yield hub, HubClient(api_url, SERVICE_TOKEN, timeout=5)
    finally:
        loop.stop()


def _approved(catalog: Catalog, audit: AuditLog, **changes: object) -> None:
    with catalog.session(immediate=True) as session:
        workflow.apply(session, audit, make_application(**changes), applicant="alice")
    for reviewer in ("rev-li", "rev-zhao"):
        with catalog.session(immediate=True) as session:
            workflow.review_application(
                session, audit, "gait-study", reviewer=reviewer, decision="approve"
            )


def _working_copy(catalog: Catalog) -> str:
    with catalog.session() as session:
        asset = Asset(
            kind=AssetKind.DERIVATIVE,
            media_type=MediaType.VIDEO,
            category=Category.MONITORING,
            level=3,
            original_name="clip-0001-cropped.mp4",
            container="mp4",
            video_codec="h264",
            width=176,
            height=144,
            fps=25.0,
            duration_s=4.0,
            frame_count=100,
            blob_id="b" * 32,
            plaintext_size=1000,
            plaintext_sha256="0" * 64,
            chunk_size=65536,
            created_by="alice",
        )
        asset.data_key = DataKey(master_key_id="m1", wrapped_key=b"\x01" * 60)
        session.add(asset)
        session.flush()
        project = projects.get_project(session, "gait-study")
        record_working_copy(
            session, asset_id=asset.id, project=project, created_by="alice"
        )
        return asset.id


def _sweep(
    catalog: Catalog, audit: AuditLog, hub: HubClient | None = None, **kwargs: object
):  # type: ignore[no-untyped-def]
    return asyncio.run(run_revocation(catalog, audit, hub, **kwargs))  # type: ignore[arg-type]


def test_end_date_ends_project(catalog: Catalog, audit: AuditLog) -> None:
    _approved(catalog, audit)

    on_last_day = _sweep(catalog, audit, today=END)
    after = _sweep(catalog, audit, today=END + dt.timedelta(days=1))
    again = _sweep(catalog, audit, today=END + dt.timedelta(days=1))

    assert on_last_day.ended == []
    assert after.ended == ["gait-study"]
    assert again.ended == []
    assert again.closed == []
    with catalog.session() as session:
        project = projects.get_project(session, "gait-study")
        assert project.status is ProjectStatus.ENDED
        assert all(g.revoked_at is not None for g in project.grants)
        with pytest.raises(PermissionDenied, match="ended on"):
            projects.authorize_read(session, "alice", "ward-clips", today=TODAY)
        closure = session.scalars(select(AccessClosure)).one()
        assert closure.cause.value == "ended"
        notices = session.scalars(select(AccessNotice)).all()
        assert {n.username for n in notices} == {"alice", "pi-wang"}
    actions = [e.action for e in audit.events()]
    assert actions[-2:] == ["project.end", "access.revoke"]
    assert audit.verify().ok


def test_end_destroys_working_copies(catalog: Catalog, audit: AuditLog) -> None:
    _approved(catalog, audit)
    asset_id = _working_copy(catalog)

    _sweep(catalog, audit, today=END + dt.timedelta(days=1))

    with catalog.session() as session:
        asset = session.get(Asset, asset_id)
        copy = session.get(WorkingCopy, asset_id)
        assert session.get(DataKey, asset_id) is None
        assert asset is not None and asset.destroyed_at is not None
        assert copy is not None and copy.destroyed_by == "enclave-ethics"
    record = audit.events(action="asset.destroy")[-1]
    assert record.target == asset_id
    assert record.actor == "enclave-ethics"
    assert record.project == "gait-study"
    assert record.detail["method"] == "key destruction"
    assert "clip-0001-cropped.mp4" in record.detail["what"]
    assert record.detail["destroyed_at"]


def test_suspension_destroys_working_copies(
    catalog: Catalog, audit: AuditLog
) -> None:
    _approved(catalog, audit)
    asset_id = _working_copy(catalog)

    with catalog.session(immediate=True) as session:
        workflow.suspend(session, audit, "gait-study", actor="heidi", reason="alert")

    with catalog.session() as session:
        asset = session.get(Asset, asset_id)
        copy = session.get(WorkingCopy, asset_id)
        assert session.get(DataKey, asset_id) is None
        assert asset is not None
        assert asset.destroyed_at is not None
        assert copy is not None
        assert copy.destroyed_by == "heidi"
    destroyed = audit.events(action="asset.destroy")
    assert [event.target for event in destroyed] == [asset_id]
    assert destroyed[0].detail["method"] == "key destruction"
    assert destroyed[0].detail["reason"] == "project suspended: alert"
    closure = audit.events(action="access.revoke")[-1]
    assert closure.detail["cause"] == "suspended"
    assert closure.detail["working_copies_destroyed"] == [asset_id]
    assert audit.verify().ok


def test_resume_keeps_copies_destroyed(catalog: Catalog, audit: AuditLog) -> None:
    _approved(catalog, audit)
    asset_id = _working_copy(catalog)
    with catalog.session(immediate=True) as session:
        workflow.suspend(session, audit, "gait-study", actor="heidi", reason="alert")

    with catalog.session(immediate=True) as session:
        workflow.resume(session, audit, "gait-study", actor="heidi", reason="cleared")

    with catalog.session() as session:
        asset = session.get(Asset, asset_id)
        copy = session.get(WorkingCopy, asset_id)
        assert session.get(DataKey, asset_id) is None
        assert asset is not None
        assert asset.destroyed_at is not None
        assert copy is not None
        assert copy.destroyed_at is not None
        project = projects.get_project(session, "gait-study")
        assert project.status is ProjectStatus.APPROVED
        with pytest.raises(ValidationError, match="is destroyed"):
            record_working_copy(
                session, asset_id=asset_id, project=project, created_by="alice"
            )
    resumed = audit.events(action="project.resume")[-1]
    assert resumed.detail["working_copies_destroyed"] == [asset_id]
    # Only the suspension destroyed anything.
    assert len(audit.events(action="asset.destroy")) == 1


def test_termination_outside_the_service_is_closed(
    catalog: Catalog, audit: AuditLog
) -> None:
    # `enclave project terminate` changes only the project; the sweep adds
    # the closure, the notices and the destruction of working copies.
    _approved(catalog, audit)
    asset_id = _working_copy(catalog)
    with catalog.session(immediate=True) as session:
        projects.terminate_project(
            session, "gait-study", "heidi", audit=audit, reason="breach"
        )

    report = _sweep(catalog, audit)

    assert report.closed == ["gait-study"]
    with catalog.session() as session:
        assert session.get(DataKey, asset_id) is None
        closure = session.scalars(select(AccessClosure)).one()
        assert (closure.cause.value, closure.reason) == ("terminated", "breach")
    assert report.pending == ["gait-study"]


def test_hub_revocation(
    catalog: Catalog, audit: AuditLog, fake_hub: tuple[FakeHub, HubClient]
) -> None:
    hub, client = fake_hub
    _approved(catalog, audit)
    hub.add_user("alice", "researchers")
    hub.add_user("pi-wang", "researchers")
    hub.add_user("outsider")
    granted = _sweep(catalog, audit, client)
    group = project_group("gait-study")
    assert set(granted.granted) == {("gait-study", "alice"), ("gait-study", "pi-wang")}
    assert hub.groups[group] == {"alice", "pi-wang"}
    hub.groups[group].add("outsider")
    hub.users["alice"].running = True

    with catalog.session(immediate=True) as session:
        workflow.terminate(session, audit, "gait-study", actor="heidi", reason="breach")
    report = _sweep(catalog, audit, client)

    assert hub.groups[group] == set()
    assert hub.users["alice"].running is False
    assert hub.users["alice"].tokens == {}
    assert hub.users["pi-wang"].tokens == {}
    assert hub.users["outsider"].tokens == {}
    assert ("gait-study", "alice") in report.revoked
    with catalog.session() as session:
        closure = session.scalars(select(AccessClosure)).one()
        assert closure.hub_revoked_at is not None
    done = audit.events(action="access.revoke")[-1]
    assert done.detail["hub"] == "done"
    assert done.detail["servers_stopped"]["alice"] == [""]


def test_hub_down_is_retried(
    catalog: Catalog, audit: AuditLog, fake_hub: tuple[FakeHub, HubClient]
) -> None:
    hub, client = fake_hub
    _approved(catalog, audit)
    hub.add_user("alice")
    with catalog.session(immediate=True) as session:
        workflow.suspend(session, audit, "gait-study", actor="heidi", reason="alert")
    hub.fail = True

    first = _sweep(catalog, audit, client)
    second = _sweep(catalog, audit, client)
    hub.fail = False
    third = _sweep(catalog, audit, client)

    assert first.pending == ["gait-study"]
    assert "HTTP 503" in first.errors[0]
    assert second.pending == ["gait-study"]
    assert third.pending == []
    assert hub.users["alice"].tokens == {}
    outcomes = [e.outcome for e in audit.events(action="access.revoke")]
    # One failure record for two failed attempts, then the success.
    assert outcomes == ["success", "failure", "success"]
    with catalog.session() as session:
        closure = session.scalars(select(AccessClosure)).one()
        assert closure.attempts == 3
        assert closure.last_error is None


def test_resumed_project_is_granted_again(
    catalog: Catalog, audit: AuditLog, fake_hub: tuple[FakeHub, HubClient]
) -> None:
    hub, client = fake_hub
    _approved(catalog, audit)
    hub.add_user("alice")
    with catalog.session(immediate=True) as session:
        workflow.suspend(session, audit, "gait-study", actor="heidi", reason="alert")
    _sweep(catalog, audit, client)
    assert "alice" not in hub.groups.get(project_group("gait-study"), set())

    with catalog.session(immediate=True) as session:
        workflow.resume(session, audit, "gait-study", actor="heidi", reason="cleared")
    _sweep(catalog, audit, client)

    assert "alice" in hub.groups[project_group("gait-study")]


def test_resume_before_hub_revocation(
    catalog: Catalog, audit: AuditLog, fake_hub: tuple[FakeHub, HubClient]
) -> None:
    # A suspension lifted while the hub was down must not log members out later.
    hub, client = fake_hub
    _approved(catalog, audit)
    hub.add_user("alice")
    with catalog.session(immediate=True) as session:
        workflow.suspend(session, audit, "gait-study", actor="heidi", reason="alert")
    with catalog.session(immediate=True) as session:
        workflow.resume(
            session, audit, "gait-study", actor="heidi", reason="false alarm"
        )

    report = _sweep(catalog, audit, client)

    assert report.revoked == []
    assert hub.users["alice"].tokens != {}
    with catalog.session() as session:
        notices = session.scalars(select(AccessNotice)).all()
        assert [n.dismissed_at is not None for n in notices] == [True, True]
