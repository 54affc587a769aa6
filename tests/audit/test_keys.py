"""Creating and loading the audit key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from enclave.audit import create_audit_key, load_audit_key
from enclave.errors import ConfigurationError


def test_create_writes_owner_only_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    old_umask = os.umask(0)
    try:
        create_audit_key(path)
    finally:
        os.umask(old_umask)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(load_audit_key(path)) == 32


def test_create_makes_distinct_keys(tmp_path: Path) -> None:
    create_audit_key(tmp_path / "a.key")
    create_audit_key(tmp_path / "b.key")

    assert load_audit_key(tmp_path / "a.key") != load_audit_key(tmp_path / "b.key")


def test_create_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    create_audit_key(path)
    before = path.read_bytes()

    with pytest.raises(ConfigurationError, match="already exists"):
        create_audit_key(path)
    assert path.read_bytes() == before


def test_create_refuses_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "audit.key").symlink_to(target)

    with pytest.raises(ConfigurationError):
        create_audit_key(tmp_path / "audit.key")
    assert not target.exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_load_rejects_shared_key(tmp_path: Path, mode: int) -> None:
    path = create_audit_key(tmp_path / "audit.key")
    path.chmod(mode)

    with pytest.raises(ConfigurationError, match=f"mode 0{mode:o}.*chmod 600"):
        load_audit_key(path)


def test_load_rejects_missing_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found; run 'enclave init'"):
        load_audit_key(tmp_path / "audit.key")


@pytest.mark.parametrize("size", [0, 16, 33])
def test_load_rejects_wrong_size(tmp_path: Path, size: int) -> None:
    path = tmp_path / "audit.key"
    path.write_bytes(b"k" * size)
    path.chmod(0o600)

    with pytest.raises(ConfigurationError, match=f"is {min(size, 33)} bytes long"):
        load_audit_key(path)


def test_audit_log_rejects_short_key(catalog) -> None:  # type: ignore[no-untyped-def]
    from enclave.audit import AuditLog

    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        AuditLog(catalog, b"short")


def test_fixture_key_is_in_settings(settings, audit_key: bytes) -> None:  # type: ignore[no-untyped-def]
    assert load_audit_key(settings.audit_key_path) == audit_key
