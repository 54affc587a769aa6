"""Reclassifying assets and the yearly review of classification."""

from __future__ import annotations

import datetime as dt

import pytest

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Asset, AssetKind, Category, MediaType
from enclave.errors import NotFound, ValidationError
from enclave.policy import due_for_review, reclassify


def _add_asset(catalog: Catalog, blob: str, classified_at: dt.datetime) -> str:
    with catalog.session() as session:
        asset = Asset(
            kind=AssetKind.SOURCE,
            media_type=MediaType.VIDEO,
            category=Category.MONITORING,
            level=3,
            original_name="ward.mp4",
            container="mp4",
            video_codec="h264",
            width=64,
            height=48,
            fps=25.0,
            duration_s=1.0,
            frame_count=25,
            blob_id=blob * 32,
            plaintext_size=10,
            plaintext_sha256="0" * 64,
            chunk_size=1024,
            created_by="steward",
            created_at=classified_at,
            classified_at=classified_at,
        )
        session.add(asset)
        session.flush()
        return asset.id


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)


def test_reclassify_changes_and_audits(
    any_catalog: Catalog, any_audit_log: AuditLog
) -> None:
    asset_id = _add_asset(any_catalog, "a", _at(dt.date(2025, 1, 1)))

    with any_catalog.session(immediate=True) as session:
        reclassify(
            session,
            any_audit_log,
            asset_id,
            level=4,
            category="diagnosis",
            actor="steward",
            reason="shows the patient's face",
        )

    with any_catalog.session() as session:
        asset = session.get(Asset, asset_id)
        assert asset.level == 4
        assert asset.category is Category.DIAGNOSIS
        assert asset.classified_at > _at(dt.date(2026, 1, 1))
    (event,) = any_audit_log.events(action="asset.reclassify")
    assert event.target == asset_id
    assert event.detail == {
        "old": {"category": "monitoring", "level": 3},
        "new": {"category": "diagnosis", "level": 4},
        "reason": "shows the patient's face",
    }


def test_confirming_resets_review(catalog: Catalog, audit_log: AuditLog) -> None:
    asset_id = _add_asset(catalog, "a", _at(dt.date(2024, 1, 1)))

    with catalog.session(immediate=True) as session:
        reclassify(session, audit_log, asset_id, actor="steward", reason="reviewed")

    with catalog.session() as session:
        assert due_for_review(session) == []
    (event,) = audit_log.events()
    assert event.detail["old"] == event.detail["new"]


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"level": 7}, ValidationError, "invalid level 7"),
        ({"category": "surgery"}, ValidationError, "invalid category 'surgery'"),
        ({"reason": " "}, ValidationError, "a reason is required"),
        ({"asset_id": "nope"}, NotFound, "asset 'nope' not found"),
    ],
)
def test_reclassify_rejects_invalid(
    catalog: Catalog, audit_log: AuditLog, changes: dict, error: type, message: str
) -> None:
    asset_id = _add_asset(catalog, "a", _at(dt.date(2025, 1, 1)))
    values = {"asset_id": asset_id, "actor": "steward", "reason": "why", **changes}

    with pytest.raises(error, match=message):
        with catalog.session(immediate=True) as session:
            reclassify(session, audit_log, **values)

    with catalog.session() as session:
        assert session.get(Asset, asset_id).level == 3
    assert audit_log.events() == []


def test_reclassify_destroyed_asset(catalog: Catalog, audit_log: AuditLog) -> None:
    asset_id = _add_asset(catalog, "a", _at(dt.date(2025, 1, 1)))
    with catalog.session() as session:
        session.get(Asset, asset_id).destroyed_at = _at(dt.date(2025, 6, 1))

    with pytest.raises(ValidationError, match="was destroyed on 2025-06-01"):
        with catalog.session(immediate=True) as session:
            reclassify(session, audit_log, asset_id, level=2, actor="s", reason="r")


def test_due_for_review_after_a_year(any_catalog: Catalog) -> None:
    today = dt.date(2026, 12, 4)
    old = _add_asset(any_catalog, "a", _at(today - dt.timedelta(days=400)))
    exactly = _add_asset(any_catalog, "b", _at(today - dt.timedelta(days=365)))
    _add_asset(any_catalog, "c", _at(today - dt.timedelta(days=364)))
    destroyed = _add_asset(any_catalog, "d", _at(today - dt.timedelta(days=500)))
    with any_catalog.session() as session:
        session.get(Asset, destroyed).destroyed_at = _at(today)

    with any_catalog.session() as session:
        due = [asset.id for asset in due_for_review(session, today)]

    assert due == [old, exactly]
