from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Asset
from enclave.cli import main
from enclave.vault import Vault, open_asset


@pytest.fixture
def enclave_ready(catalog: Catalog, vault: Vault, audit_log: AuditLog) -> Catalog:
    """An installation with a catalog, a master key and an audit key."""
    return catalog


def asset_count(catalog: Catalog) -> int:
    with catalog.session() as session:
        return session.scalar(select(func.count()).select_from(Asset))


def test_ingest_prints_asset_ids(
    enclave_ready: Catalog,
    vault: Vault,
    carphone_path: Path,
    ultrasound_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(
        [
            "ingest",
            str(carphone_path),
            str(ultrasound_path),
            "--category",
            "diagnosis",
            "--level",
            "3",
            "--consent",
            "CONSENT-1",
            "--ethics",
            "IRB-7",
            "--as",
            "erin",
        ]
    )

    out, err = capsys.readouterr()
    ids = out.split()
    assert status == 0
    assert err == ""
    assert len(ids) == 2
    with enclave_ready.session() as session:
        first = session.get(Asset, ids[0])
        second = session.get(Asset, ids[1])
        assert first.original_name == "carphone_pristine.mp4"
        assert second.frame_count == 30
        assert first.created_by == "erin"
        assert first.consent_ref == "CONSENT-1"
        assert first.ethics_ref == "IRB-7"
        with open_asset(vault, first) as reader:
            assert reader.read() == carphone_path.read_bytes()


def test_bad_file_reported_others_stored(
    enclave_ready: Catalog,
    carphone_path: Path,
    bikes_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")

    status = main(
        [
            "ingest",
            str(carphone_path),
            str(bad),
            str(bikes_path),
            "--category",
            "teaching",
            "--level",
            "1",
        ]
    )

    out, err = capsys.readouterr()
    assert status == 1
    assert len(out.split()) == 2
    assert err.startswith(f"enclave ingest: error: {bad}: the file contains text")
    assert err.count("\n") == 1
    assert asset_count(enclave_ready) == 2


def test_missing_file_reported(
    enclave_ready: Catalog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "gone.mp4"

    status = main(["ingest", str(missing), "--category", "nursing", "--level", "2"])

    _, err = capsys.readouterr()
    assert status == 1
    assert err == f"enclave ingest: error: {missing}: file not found; check the path\n"


@pytest.mark.parametrize("level", ["3", "4", "5"])
def test_consent_required_from_level_3(
    enclave_ready: Catalog,
    carphone_path: Path,
    capsys: pytest.CaptureFixture[str],
    level: str,
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["ingest", str(carphone_path), "--category", "nursing", "--level", level])

    _, err = capsys.readouterr()
    assert caught.value.code == 2
    assert f"--consent is required for level {level}" in err
    assert "involves patients" in err
    assert asset_count(enclave_ready) == 0


@pytest.mark.parametrize(
    ("option", "value"), [("--category", "surgery"), ("--level", "6")]
)
def test_invalid_choice_rejected(
    enclave_ready: Catalog,
    carphone_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
) -> None:
    arguments = {"--category": "nursing", "--level": "1", option: value}

    with pytest.raises(SystemExit) as caught:
        main(["ingest", str(carphone_path), *_flatten(arguments)])

    _, err = capsys.readouterr()
    assert caught.value.code == 2
    assert f"argument {option}: invalid choice" in err
    assert value in err


def _flatten(options: dict[str, str]) -> list[str]:
    return [part for pair in options.items() for part in pair]


def test_loose_master_key_rejected(
    enclave_ready: Catalog,
    settings,  # type: ignore[no-untyped-def]
    carphone_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings.master_key_path.chmod(0o644)

    status = main(
        ["ingest", str(carphone_path), "--category", "nursing", "--level", "1"]
    )

    _, err = capsys.readouterr()
    assert status == 1
    assert f"chmod 600 {settings.master_key_path}" in err
    assert asset_count(enclave_ready) == 0


def test_ingest_command_runs(
    enclave_ready: Catalog, carphone_path: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.mkv"
    empty.touch()

    completed = subprocess.run(
        [
            str(Path(sys.executable).with_name("enclave")),
            "ingest",
            str(carphone_path),
            str(empty),
            "--category",
            "monitoring",
            "--level",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 1
    assert len(completed.stdout.split()) == 1
    assert f"enclave ingest: error: {empty}: the file is empty" in completed.stderr
