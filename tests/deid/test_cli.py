"""enclave deid, enclave derive and enclave dataset list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.cli import main
from enclave.ingest import ingest_file
from enclave.vault import Vault
from tests.deid.support import ingest_and_derive


@pytest.fixture
def enclave_ready(catalog: Catalog, vault: Vault, audit_log: AuditLog) -> Catalog:
    return catalog


@pytest.fixture
def small_clip(synthetic_clip) -> Path:
    return synthetic_clip("small.mp4", width=320, height=192, frames=8, faces=1).path


def test_deid_writes_output_and_report(small_clip, tmp_path, capsys):
    output = tmp_path / "clean.mp4"
    report = tmp_path / "report.json"

    status = main(
        [
            "deid",
            str(small_clip),
            str(output),
            "--profile",
            "baseline",
            "--report",
            str(report),
        ]
    )

    assert status == 0
    assert output.stat().st_size > 0
    assert json.loads(report.read_text())["residual_check"]["passed"] is True
    assert "residual check passed" in capsys.readouterr().out


def test_deid_residual_failure_writes_nothing(small_clip, tmp_path, capsys):
    output = tmp_path / "out" / "clean.mp4"
    output.parent.mkdir()

    status = main(
        [
            "deid",
            str(small_clip),
            str(output),
            "--profile",
            "baseline",
            "--option",
            "faces_enabled=False",
        ]
    )

    assert status == 1
    assert not output.exists()
    assert list(output.parent.iterdir()) == []
    assert "was not written" in capsys.readouterr().err


def test_deid_rejects_bad_option(small_clip, tmp_path, capsys):
    status = main(
        [
            "deid",
            str(small_clip),
            str(tmp_path / "o.mp4"),
            "--profile",
            "baseline",
            "--option",
            "faces_colour=red",
        ]
    )

    assert status == 1
    assert "unknown" in capsys.readouterr().err


def test_deid_rejects_output_in_vault(small_clip, settings, capsys):
    settings.vault_dir.mkdir(mode=0o700)
    output = settings.vault_dir / "clean.mp4"

    status = main(["deid", str(small_clip), str(output), "--profile", "baseline"])

    assert status == 1
    assert not output.exists()
    assert "inside the vault folder" in capsys.readouterr().err


def test_deid_missing_input(tmp_path, capsys):
    status = main(
        [
            "deid",
            str(tmp_path / "none.mp4"),
            str(tmp_path / "o.mp4"),
            "--profile",
            "baseline",
        ]
    )

    assert status == 1
    assert "not found" in capsys.readouterr().err


def test_derive_and_dataset_list(enclave_ready, vault, audit_log, small_clip, capsys):
    asset = ingest_file(
        enclave_ready,
        vault,
        audit_log,
        small_clip,
        category="nursing",
        level=2,
        actor="steward",
    )

    status = main(
        [
            "derive",
            asset.id,
            "--profile",
            "baseline",
            "--dataset",
            "ward-study",
            "--as",
            "steward",
        ]
    )

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0] == "ward-study"
    assert lines[1].startswith("clips/0001 ")

    assert main(["dataset", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == ["ward-study"]
    assert rows[0]["profile"] == "baseline"
    assert rows[0]["category"] == "nursing"
    assert rows[0]["items"][0]["path"] == "clips/0001"

    assert main(["dataset", "list"]) == 0
    assert "ward-study" in capsys.readouterr().out


def test_derive_unknown_asset(enclave_ready, capsys):
    status = main(
        ["derive", "0" * 32, "--profile", "baseline", "--dataset", "x1", "--as", "s"]
    )

    assert status == 1
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_deid_dicom_through_dicom_module(ultrasound_path, tmp_path):
    output = tmp_path / "clean.dcm"
    report = tmp_path / "report.json"

    status = main(
        [
            "deid",
            str(ultrasound_path),
            str(output),
            "--profile",
            "baseline",
            "--report",
            str(report),
        ]
    )

    assert status == 0
    assert output.read_bytes()[128:132] == b"DICM"
    content = json.loads(report.read_text())
    assert content["media_type"] == "dicom"
    assert [m["step"] for m in content["models"]] == ["text"] * len(content["models"])


def test_derive_dicom_asset(enclave_ready, vault, audit_log, ultrasound_path):
    from enclave.catalog.models import Asset, MediaType

    asset, dataset = ingest_and_derive(
        enclave_ready,
        vault,
        audit_log,
        ultrasound_path,
        profile="baseline",
        dataset_name="echo-set",
    )

    with enclave_ready.session() as session:
        derivative = session.get(Asset, dataset.items[0].asset_id)
        assert derivative.media_type == MediaType.DICOM
        assert derivative.source_id == asset.id
        assert derivative.deid_report["media_type"] == "dicom"
