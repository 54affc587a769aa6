from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Asset, AssetKind, Category, DataKey, MediaType
from enclave.errors import AuditUnavailable, IngestError, NotFound, ValidationError
from enclave.ingest import ingest_file, store_asset
from enclave.vault import Vault, open_asset

MakeVideo = Callable[..., Path]


def count_rows(catalog: Catalog, model: type) -> int:
    with catalog.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def blob_files(vault: Vault) -> list[Path]:
    return sorted(path for path in vault.root.rglob("*") if path.is_file())


@pytest.fixture
def patient_folder(tmp_path: Path, carphone_path: Path) -> Path:
    """A source folder whose name identifies a patient, as hospital exports do."""
    folder = tmp_path / "Doe_John_19650412"
    folder.mkdir()
    (folder / "carphone.mp4").write_bytes(carphone_path.read_bytes())
    return folder


def test_ingest_stores_encrypted_asset(
    catalog: Catalog, vault: Vault, audit_log: AuditLog, patient_folder: Path
) -> None:
    source = patient_folder / "carphone.mp4"

    asset = ingest_file(
        catalog,
        vault,
        audit_log,
        source,
        category="diagnosis",
        level=3,
        consent_ref="CONSENT-17",
        ethics_ref="IRB-2026-004",
        actor="steward",
    )

    with catalog.session() as session:
        stored = session.get(Asset, asset.id)
        assert stored is not None
        assert stored.kind is AssetKind.SOURCE
        assert stored.media_type is MediaType.VIDEO
        assert stored.category is Category.DIAGNOSIS
        assert stored.level == 3
        assert stored.original_name == "carphone.mp4"
        assert stored.consent_ref == "CONSENT-17"
        assert stored.ethics_ref == "IRB-2026-004"
        assert stored.frame_count == 120
        assert (stored.width, stored.height) == (176, 144)
        assert stored.created_by == "steward"
        assert stored.data_key is not None
        assert stored.data_key.master_key_id == vault.keyring.master_key_id
    with open_asset(vault, asset) as reader:
        assert reader.read() == source.read_bytes()


def test_ingest_audit_names_base_name_only(
    catalog: Catalog, vault: Vault, audit_log: AuditLog, patient_folder: Path
) -> None:
    asset = ingest_file(
        catalog,
        vault,
        audit_log,
        patient_folder / "carphone.mp4",
        category="teaching",
        level=1,
        actor="steward",
    )

    [event] = audit_log.events(action="asset.ingest")
    assert event.outcome == "success"
    assert event.target == asset.id
    assert event.detail["asset_id"] == asset.id
    assert event.detail["name"] == "carphone.mp4"
    assert event.detail["plaintext_size"] == asset.plaintext_size
    assert event.detail["stored_size"] > asset.plaintext_size
    assert event.detail["probe"]["frame_count"] == 120
    assert "Doe_John" not in json.dumps(event.detail)
    assert audit_log.verify().ok


def test_ingest_dicom_loop(
    catalog: Catalog, vault: Vault, audit_log: AuditLog, ultrasound_path: Path
) -> None:
    asset = ingest_file(
        catalog,
        vault,
        audit_log,
        ultrasound_path,
        category="diagnosis",
        level=4,
        consent_ref="CONSENT-18",
        actor="steward",
    )

    assert asset.media_type is MediaType.DICOM
    assert asset.frame_count == 30
    with open_asset(vault, asset) as reader:
        assert reader.read() == ultrasound_path.read_bytes()


@pytest.mark.parametrize("level", [3, 4, 5])
def test_consent_required_from_level_3(
    catalog: Catalog, vault: Vault, audit_log: AuditLog, carphone_path: Path, level: int
) -> None:
    with pytest.raises(ValidationError, match=f"level {level} video .*consent"):
        ingest_file(
            catalog,
            vault,
            audit_log,
            carphone_path,
            category="nursing",
            level=level,
            actor="steward",
        )

    assert count_rows(catalog, Asset) == 0
    assert blob_files(vault) == []


@pytest.mark.parametrize(
    ("category", "level", "message"),
    [
        ("surgery", 1, "invalid category 'surgery'; use one of diagnosis"),
        ("nursing", 6, "invalid level 6; use 1, 2, 3, 4 or 5"),
        ("nursing", 0, "invalid level 0"),
    ],
)
def test_invalid_classification_rejected(
    catalog: Catalog,
    vault: Vault,
    audit_log: AuditLog,
    carphone_path: Path,
    category: str,
    level: int,
    message: str,
) -> None:
    with pytest.raises(ValidationError, match=message):
        ingest_file(
            catalog,
            vault,
            audit_log,
            carphone_path,
            category=category,
            level=level,
            consent_ref="C",
            actor="steward",
        )

    assert count_rows(catalog, Asset) == 0


def test_failed_ingest_leaves_nothing(
    catalog: Catalog,
    vault: Vault,
    audit_log: AuditLog,
    carphone_path: Path,
    tmp_path: Path,
) -> None:
    first = ingest_file(
        catalog,
        vault,
        audit_log,
        carphone_path,
        category="teaching",
        level=1,
        actor="s",
    )
    files_before = blob_files(vault)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(carphone_path.read_bytes()[:200_000])

    with pytest.raises(IngestError, match="truncated"):
        ingest_file(
            catalog, vault, audit_log, cut, category="teaching", level=1, actor="s"
        )

    assert blob_files(vault) == files_before
    assert count_rows(catalog, Asset) == 1
    assert count_rows(catalog, DataKey) == 1
    with open_asset(vault, first) as reader:
        assert reader.read() == carphone_path.read_bytes()


def test_rejection_is_audited(
    catalog: Catalog, vault: Vault, audit_log: AuditLog, patient_folder: Path
) -> None:
    bad = patient_folder / "notes.mp4"
    bad.write_text("not a video")

    with pytest.raises(IngestError):
        ingest_file(
            catalog,
            vault,
            audit_log,
            bad,
            category="teaching",
            level=1,
            actor="steward",
        )

    [event] = audit_log.events(action="asset.ingest", outcome="failure")
    assert event.detail["name"] == "notes.mp4"
    assert "contains text" in event.detail["reason"]
    assert "Doe_John" not in json.dumps(event.detail)


def test_audit_failure_removes_blob(
    catalog: Catalog,
    vault: Vault,
    audit_log: AuditLog,
    carphone_path: Path,
    bikes_path: Path,
) -> None:
    first = ingest_file(
        catalog,
        vault,
        audit_log,
        carphone_path,
        category="teaching",
        level=1,
        actor="s",
    )
    files_before = blob_files(vault)
    with catalog.engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_events"))

    with pytest.raises(AuditUnavailable):
        ingest_file(
            catalog,
            vault,
            audit_log,
            bikes_path,
            category="teaching",
            level=1,
            actor="s",
        )

    assert blob_files(vault) == files_before
    assert count_rows(catalog, Asset) == 1
    with open_asset(vault, first) as reader:
        assert reader.read(16) == carphone_path.read_bytes()[:16]


def test_store_asset_derivative(
    catalog: Catalog,
    vault: Vault,
    audit_log: AuditLog,
    carphone_path: Path,
    make_video: MakeVideo,
) -> None:
    source = ingest_file(
        catalog,
        vault,
        audit_log,
        carphone_path,
        category="monitoring",
        level=3,
        consent_ref="CONSENT-9",
        ethics_ref="IRB-1",
        actor="steward",
    )
    data = make_video("deid.mp4", width=176, height=144, frames=12).read_bytes()

    derivative = store_asset(
        catalog,
        vault,
        audit_log,
        data,
        name="clip-0001.mp4",
        kind="derivative",
        category="monitoring",
        level=2,
        source_id=source.id,
        profile="baseline",
        deid_report={"faces": 3},
        actor="steward",
    )

    with catalog.session() as session:
        stored = session.get(Asset, derivative.id)
        assert stored.kind is AssetKind.DERIVATIVE
        assert stored.source_id == source.id
        assert stored.profile == "baseline"
        assert stored.deid_report == {"faces": 3}
        assert stored.consent_ref == "CONSENT-9"
        assert stored.ethics_ref == "IRB-1"
        assert stored.frame_count == 12
    with open_asset(vault, derivative) as reader:
        assert reader.read() == data
    events = audit_log.events(action="asset.ingest")
    assert [event.detail["kind"] for event in events] == ["source", "derivative"]


def test_store_asset_bad_bytes_leave_nothing(
    catalog: Catalog, vault: Vault, audit_log: AuditLog
) -> None:
    with pytest.raises(IngestError, match="clip.mp4: the file contains text"):
        store_asset(
            catalog,
            vault,
            audit_log,
            b"not a video at all",
            name="clip.mp4",
            category="teaching",
            level=1,
            source_id=None,
            profile="baseline",
            deid_report=None,
            actor="steward",
        )

    assert blob_files(vault) == []
    assert count_rows(catalog, Asset) == 0


def test_store_asset_unknown_source(
    catalog: Catalog, vault: Vault, audit_log: AuditLog, carphone_path: Path
) -> None:
    with pytest.raises(NotFound, match="source asset 0+ not found"):
        store_asset(
            catalog,
            vault,
            audit_log,
            carphone_path.read_bytes(),
            name="clip.mp4",
            category="teaching",
            level=1,
            source_id="0" * 32,
            profile="baseline",
            deid_report=None,
            actor="steward",
        )

    assert blob_files(vault) == []


def test_ingest_on_each_database(
    any_catalog: Catalog, any_audit_log: AuditLog, vault: Vault, carphone_path: Path
) -> None:
    asset = ingest_file(
        any_catalog,
        vault,
        any_audit_log,
        carphone_path,
        category="nursing",
        level=2,
        actor="steward",
    )

    with any_catalog.session() as session:
        stored = session.get(Asset, asset.id)
        assert stored is not None
        assert stored.data_key.wrapped_key == asset.data_key.wrapped_key
        assert stored.probe["frame_count"] == 120
        with open_asset(vault, stored) as reader:
            assert reader.read() == carphone_path.read_bytes()
    assert any_audit_log.verify().ok
