from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from enclave.config import Settings
from enclave.errors import ConfigurationError, IntegrityError, ValidationError
from enclave.vault import KeyRing, Vault


def test_create_writes_owner_only_file(settings: Settings) -> None:
    old_umask = os.umask(0)
    try:
        keyring = KeyRing.create(settings.master_key_path)
    finally:
        os.umask(old_umask)

    info = settings.master_key_path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_size == 32
    assert len(keyring.master_key_id) == 16
    int(keyring.master_key_id, 16)


def test_create_rejects_existing_file(keyring: KeyRing, settings: Settings) -> None:
    before = settings.master_key_path.read_bytes()

    with pytest.raises(ConfigurationError, match="already exists"):
        KeyRing.create(settings.master_key_path)

    assert settings.master_key_path.read_bytes() == before


def test_load_returns_same_key(keyring: KeyRing, settings: Settings) -> None:
    loaded = KeyRing.load(settings.master_key_path)

    assert loaded.master_key_id == keyring.master_key_id
    _, wrapped = keyring.wrap(b"k" * 32)
    assert loaded.unwrap(keyring.master_key_id, wrapped) == b"k" * 32


def test_key_id_is_not_hash_of_raw_key(keyring: KeyRing, settings: Settings) -> None:
    import hashlib

    raw = settings.master_key_path.read_bytes()

    assert keyring.master_key_id not in hashlib.sha256(raw).hexdigest()
    assert keyring.master_key_id not in raw.hex()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_load_rejects_readable_by_others(
    keyring: KeyRing, settings: Settings, mode: int
) -> None:
    path = settings.master_key_path
    path.chmod(mode)

    with pytest.raises(ConfigurationError, match=f"chmod 600 {path}"):
        KeyRing.load(path)


def test_load_missing_file_says_run_init(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="enclave init"):
        KeyRing.load(settings.master_key_path)


def test_load_rejects_wrong_length(settings: Settings) -> None:
    path = settings.master_key_path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short")
    os.close(fd)

    with pytest.raises(ConfigurationError, match="5 bytes"):
        KeyRing.load(path)


def test_load_rejects_key_inside_vault(settings: Settings) -> None:
    settings.vault_dir.mkdir(mode=0o700)
    path = settings.vault_dir / "master.key"
    KeyRing.create(path)

    with pytest.raises(ConfigurationError, match="inside the vault folder"):
        KeyRing.load(path, vault_dir=settings.vault_dir)
    with pytest.raises(ConfigurationError, match="inside the vault folder"):
        Vault(settings.vault_dir, KeyRing.load(path))


def test_load_rejects_symlink(keyring: KeyRing, settings: Settings) -> None:
    link = settings.key_dir / "link.key"
    link.symlink_to(settings.master_key_path)

    with pytest.raises(ConfigurationError, match="not a regular file"):
        KeyRing.load(link)


def test_wrap_round_trip(keyring: KeyRing) -> None:
    data_key = secrets.token_bytes(32)

    key_id, wrapped = keyring.wrap(data_key)

    assert key_id == keyring.master_key_id
    assert len(wrapped) == 40
    assert data_key not in wrapped
    assert keyring.unwrap(key_id, wrapped) == data_key


def test_wrap_rejects_wrong_size(keyring: KeyRing) -> None:
    with pytest.raises(ValidationError, match="32 bytes, got 16"):
        keyring.wrap(b"x" * 16)


def test_unwrap_tampered_raises(keyring: KeyRing) -> None:
    key_id, wrapped = keyring.wrap(secrets.token_bytes(32))
    tampered = bytes([wrapped[0] ^ 1]) + wrapped[1:]

    with pytest.raises(IntegrityError, match="integrity check"):
        keyring.unwrap(key_id, tampered)


def test_unwrap_with_other_master_key(keyring: KeyRing, tmp_path: Path) -> None:
    other = KeyRing.create(tmp_path / "other.key")
    key_id, wrapped = keyring.wrap(secrets.token_bytes(32))

    with pytest.raises(IntegrityError):
        other.unwrap(key_id, wrapped)
    # Even under a forged key id, the other key cannot unwrap it.
    with pytest.raises(IntegrityError, match="integrity check"):
        other.unwrap(other.master_key_id, wrapped)
