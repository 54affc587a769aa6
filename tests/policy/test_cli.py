"""The ``enclave levels`` command."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Asset, AssetKind, Category, MediaType
from enclave.cli import main
from enclave.policy import rules_for


def _add_asset(catalog: Catalog, classified_at: dt.datetime) -> str:
    with catalog.session() as session:
        asset = Asset(
            kind=AssetKind.SOURCE,
            media_type=MediaType.VIDEO,
            category=Category.NURSING,
            level=3,
            original_name="rehab.mp4",
            container="mp4",
            video_codec="h264",
            width=64,
            height=48,
            fps=25.0,
            duration_s=1.0,
            frame_count=25,
            blob_id="f" * 32,
            plaintext_size=10,
            plaintext_sha256="0" * 64,
            chunk_size=1024,
            created_by="steward",
            classified_at=classified_at,
        )
        session.add(asset)
        session.flush()
        return asset.id


def test_show_json(catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["levels", "show", "--json"])

    output = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [rule["level"] for rule in output["levels"]] == [1, 2, 3, 4, 5]
    assert output["levels"][2]["backup_interval_minutes"] == 60
    assert {c["category"] for c in output["categories"]} == {
        "diagnosis",
        "nursing",
        "monitoring",
        "teaching",
    }


def test_show_text(catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["levels", "show"])

    out = capsys.readouterr().out
    assert status == 0
    assert "level 4 (identifying)" in out
    assert "every 60 minutes" in out


def test_set_changes_rule_and_audits(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "levels",
            "set",
            "2",
            "--backup-interval",
            "120",
            "--requires-mfa",
            "yes",
            "--as",
            "secadmin",
        ]
    )

    assert status == 0
    with catalog.session() as session:
        rule = rules_for(session, 2)
        assert rule.backup_interval_minutes == 120
        assert rule.requires_mfa is True
    (event,) = audit_log.events(action="level.update")
    assert event.actor == "secadmin"
    assert event.detail["new"] == {"backup_interval_minutes": 120, "requires_mfa": True}


def test_set_none_clears_schedule(catalog: Catalog, audit_log: AuditLog) -> None:
    assert main(["levels", "set", "2", "--backup-interval", "30"]) == 0

    assert main(["levels", "set", "2", "--backup-interval", "none"]) == 0

    with catalog.session() as session:
        assert rules_for(session, 2).backup_interval_minutes is None


def test_set_rejects_breaking_value(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["levels", "set", "4", "--requires-mfa", "no"])

    assert status == 1
    assert "level 4 requires multi-factor login" in capsys.readouterr().err
    assert audit_log.events() == []


def test_set_without_options(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["levels", "set", "3"])

    assert status == 1
    assert "nothing to change" in capsys.readouterr().err


def test_reclassify_and_review(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    old = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    asset_id = _add_asset(catalog, old)
    assert main(["levels", "review", "--json"]) == 0
    assert [e["asset"] for e in json.loads(capsys.readouterr().out)] == [asset_id]

    status = main(
        [
            "levels",
            "reclassify",
            asset_id,
            "--level",
            "4",
            "--category",
            "diagnosis",
            "--reason",
            "faces visible",
            "--as",
            "steward",
        ]
    )

    assert status == 0
    assert capsys.readouterr().out.strip() == f"asset {asset_id} is level 4, diagnosis"
    assert main(["levels", "review"]) == 0
    assert "no classification is due" in capsys.readouterr().out
    (event,) = audit_log.events(action="asset.reclassify")
    assert event.detail["reason"] == "faces visible"


def test_reclassify_unknown_asset(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["levels", "reclassify", "nope", "--level", "2", "--reason", "x"])

    assert status == 1
    assert "asset 'nope' not found" in capsys.readouterr().err
