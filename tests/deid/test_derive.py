"""derive: de-identify vault assets into a dataset, all or nothing."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import av
import pytest
from sqlalchemy import func, select

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Asset, AssetKind, Dataset
from enclave.deid import derive
from enclave.errors import (
    DeidentificationError,
    NotFound,
    PermissionDenied,
    ResidualCheckFailed,
    ValidationError,
)
from enclave.ingest import ingest_file
from enclave.vault import Vault, open_asset


def _ingest(
    catalog: Catalog, vault: Vault, audit: AuditLog, path: Path, level: int = 2
) -> str:
    asset = ingest_file(
        catalog,
        vault,
        audit,
        path,
        category="teaching",
        level=level,
        consent_ref="consent-1",
        actor="steward",
    )
    return asset.id


@pytest.fixture
def small_clip(synthetic_clip) -> Path:
    return synthetic_clip(
        "small.mp4", width=320, height=192, frames=12, faces=1, tags=False
    ).path


def _blob_files(vault: Vault) -> set[Path]:
    return {path for path in vault.root.rglob("*") if path.is_file()}


def _asset_count(catalog: Catalog) -> int:
    with catalog.session() as session:
        return session.scalar(select(func.count()).select_from(Asset))


def test_derive_publishes_items(catalog, vault, audit_log, carphone_path):
    first = _ingest(catalog, vault, audit_log, carphone_path)
    second = _ingest(catalog, vault, audit_log, carphone_path, level=3)

    dataset = derive(
        catalog,
        vault,
        audit_log,
        [first, second],
        profile="baseline",
        dataset_name="carphone-study",
        actor="steward",
    )

    assert dataset.name == "carphone-study"
    assert [item.path for item in dataset.items] == ["clips/0001", "clips/0002"]
    assert dataset.level == 3
    assert dataset.category.value == "teaching"
    with catalog.session() as session:
        derivative = session.get(Asset, dataset.items[0].asset_id)
        assert derivative.kind == AssetKind.DERIVATIVE
        assert derivative.source_id == first
        assert derivative.profile == "baseline"
        assert derivative.deid_report["residual_check"]["passed"] is True
        assert derivative.frame_count == 120
        with open_asset(vault, derivative) as reader:
            data = reader.read()
    with av.open(io.BytesIO(data)) as container:
        assert not container.streams.audio
    events = list(audit_log.events(action="dataset.derive"))
    assert events[-1].outcome == "success"
    assert events[-1].dataset == "carphone-study"


def test_derive_failure_publishes_nothing(catalog, vault, audit_log, small_clip):
    asset_id = _ingest(catalog, vault, audit_log, small_clip)
    before = _asset_count(catalog)
    blobs_before = _blob_files(vault)

    with pytest.raises(ResidualCheckFailed):
        derive(
            catalog,
            vault,
            audit_log,
            [asset_id],
            profile="baseline",
            dataset_name="unmasked",
            actor="steward",
            faces_enabled=False,
        )

    assert _asset_count(catalog) == before
    assert _blob_files(vault) == blobs_before
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0
    events = list(audit_log.events(action="dataset.derive"))
    assert events[-1].outcome == "failure"


def test_derive_second_asset_fails_rolls_back(
    catalog, vault, audit_log, small_clip, monkeypatch
):
    from enclave.deid import api

    first = _ingest(catalog, vault, audit_log, small_clip)
    second = _ingest(catalog, vault, audit_log, small_clip)
    before = _asset_count(catalog)
    blobs_before = _blob_files(vault)
    real = api.deidentify_bytes
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise DeidentificationError("the encoder failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "deidentify_bytes", fail_second)

    with pytest.raises(DeidentificationError, match="encoder failed"):
        derive(
            catalog,
            vault,
            audit_log,
            [first, second],
            profile="baseline",
            dataset_name="partial",
            actor="steward",
        )

    assert len(calls) == 2
    assert _asset_count(catalog) == before
    assert _blob_files(vault) == blobs_before


def test_derive_unknown_asset_not_found(catalog, vault, audit_log):
    with pytest.raises(NotFound, match="not found"):
        derive(
            catalog,
            vault,
            audit_log,
            ["0" * 32],
            profile="baseline",
            dataset_name="missing",
            actor="steward",
        )


def _project(
    catalog: Catalog, audit: AuditLog, members: list[str], dataset: str
) -> None:
    from enclave.projects import create_project

    today = dt.date.today()
    with catalog.session(immediate=True) as session:
        create_project(
            session,
            name="gait-study",
            title="Gait study",
            purpose="gait analysis",
            pi="pi",
            members=members,
            datasets=[dataset],
            starts_on=today,
            ends_on=today + dt.timedelta(days=30),
            created_by="pi",
            audit=audit,
        )


def test_derive_denies_project_member(catalog, vault, audit_log, small_clip):
    asset_id = _ingest(catalog, vault, audit_log, small_clip)
    derive(
        catalog,
        vault,
        audit_log,
        [asset_id],
        profile="baseline",
        dataset_name="study",
        actor="steward",
    )
    _project(catalog, audit_log, ["bob"], "study")
    before = _asset_count(catalog)

    with pytest.raises(PermissionDenied, match="member of project"):
        derive(
            catalog,
            vault,
            audit_log,
            [asset_id],
            profile="baseline",
            dataset_name="study-v2",
            actor="bob",
        )

    assert _asset_count(catalog) == before
    events = list(audit_log.events(action="dataset.derive"))
    assert events[-1].outcome == "denied"
    assert events[-1].actor == "bob"


def test_projects_using_output_finds_holders(catalog, vault, audit_log, small_clip):
    from enclave.deid.derivation import projects_using_output

    asset_id = _ingest(catalog, vault, audit_log, small_clip)
    derive(
        catalog,
        vault,
        audit_log,
        [asset_id],
        profile="baseline",
        dataset_name="study",
        actor="steward",
    )
    _project(catalog, audit_log, ["bob"], "study")

    with catalog.session() as session:
        assert projects_using_output(session, "bob", "study") == ["gait-study"]
        assert projects_using_output(session, "bob", "other", [asset_id]) == [
            "gait-study"
        ]
        assert projects_using_output(session, "bob", "other", ["0" * 32]) == []
        assert projects_using_output(session, "steward", "study", [asset_id]) == []


@pytest.mark.parametrize("name", ["", "Upper", "-x", "a b"])
def test_derive_rejects_bad_name(catalog, vault, audit_log, name):
    with pytest.raises(ValidationError, match="dataset name"):
        derive(
            catalog,
            vault,
            audit_log,
            ["x"],
            profile="baseline",
            dataset_name=name,
            actor="s",
        )


def test_derive_rejects_derivative_source(catalog, vault, audit_log, small_clip):
    asset_id = _ingest(catalog, vault, audit_log, small_clip)
    dataset = derive(
        catalog,
        vault,
        audit_log,
        [asset_id],
        profile="baseline",
        dataset_name="first",
        actor="steward",
    )

    with pytest.raises(ValidationError, match="derivative"):
        derive(
            catalog,
            vault,
            audit_log,
            [dataset.items[0].asset_id],
            profile="baseline",
            dataset_name="second",
            actor="steward",
        )
