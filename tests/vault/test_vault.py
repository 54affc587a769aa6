from __future__ import annotations

import hashlib
import io
import os
import random
import stat
from pathlib import Path

import pytest

from enclave.config import Settings
from enclave.errors import ConfigurationError, IntegrityError, NotFound, ValidationError
from enclave.vault import KeyRing, Vault, VaultReader, open_asset
from enclave.vault._format import CHUNK_OVERHEAD, HEADER_SIZE


def blob_file(vault: Vault, blob_id: str) -> Path:
    return vault.path_of(blob_id)


def open_blob(vault: Vault, blob) -> VaultReader:  # type: ignore[no-untyped-def]
    return vault.open(blob.blob_id, blob.master_key_id, blob.wrapped_key)


def all_vault_bytes(vault: Vault) -> bytes:
    return b"".join(
        p.read_bytes() for p in sorted(vault.root.rglob("*")) if p.is_file()
    )


@pytest.fixture
def small_vault(settings: Settings, keyring: KeyRing) -> Vault:
    """A vault with 4 KiB chunks, so small inputs span many chunks."""
    return Vault(settings.vault_dir, keyring, chunk_size=4096)


def test_round_trip_carphone(vault: Vault, carphone_path: Path) -> None:
    plaintext = carphone_path.read_bytes()

    blob = vault.write(carphone_path)

    assert blob.plaintext_size == len(plaintext)
    assert blob.plaintext_sha256 == hashlib.sha256(plaintext).hexdigest()
    assert blob.chunk_size == 1 << 20
    assert (
        vault.read_bytes(blob.blob_id, blob.master_key_id, blob.wrapped_key)
        == plaintext
    )


def test_vault_folder_mode_0700(vault: Vault, carphone_path: Path) -> None:
    blob = vault.write(carphone_path)

    assert stat.S_IMODE(vault.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(blob_file(vault, blob.blob_id).parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(blob_file(vault, blob.blob_id).stat().st_mode) == 0o600


def test_vault_rejects_open_folder(settings: Settings, keyring: KeyRing) -> None:
    settings.vault_dir.mkdir(mode=0o700)
    settings.vault_dir.chmod(0o755)

    with pytest.raises(ConfigurationError, match=f"chmod 700 {settings.vault_dir}"):
        Vault(settings.vault_dir, keyring)


@pytest.mark.parametrize("kind", ["path", "bytes", "file", "unseekable"])
def test_write_accepts_each_source(
    small_vault: Vault, carphone_path: Path, kind: str
) -> None:
    plaintext = carphone_path.read_bytes()
    sources = {
        "path": lambda: carphone_path,
        "bytes": lambda: plaintext,
        "file": lambda: io.BytesIO(plaintext),
        "unseekable": lambda: io.BufferedReader(_Unseekable(plaintext)),
    }

    blob = small_vault.write(sources[kind]())

    assert (
        small_vault.read_bytes(blob.blob_id, blob.master_key_id, blob.wrapped_key)
        == plaintext
    )


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        return self._data.readinto(buffer)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096])
def test_chunk_boundaries(small_vault: Vault, size: int) -> None:
    plaintext = os.urandom(size)

    blob = small_vault.write(plaintext)

    assert (
        small_vault.read_bytes(blob.blob_id, blob.master_key_id, blob.wrapped_key)
        == plaintext
    )
    chunks = max(1, -(-size // 4096))
    assert blob_file(small_vault, blob.blob_id).stat().st_size == (
        HEADER_SIZE + size + chunks * CHUNK_OVERHEAD
    )


def test_random_ranges_match_plaintext(small_vault: Vault, carphone_path: Path) -> None:
    plaintext = carphone_path.read_bytes()
    blob = small_vault.write(carphone_path)
    rng = random.Random(1234)

    with open_blob(small_vault, blob) as reader:
        assert reader.readable()
        assert reader.seekable()
        assert reader.size == len(plaintext)
        for _ in range(200):
            start = rng.randrange(len(plaintext))
            length = rng.randrange(1, 20_000)
            assert reader.seek(start) == start
            assert reader.read(length) == plaintext[start : start + length]
            assert reader.tell() == min(start + length, len(plaintext))
        reader.seek(-10, io.SEEK_END)
        assert reader.read() == plaintext[-10:]
        assert reader.read(5) == b""


def test_reader_works_with_buffered_io(small_vault: Vault, carphone_path: Path) -> None:
    plaintext = carphone_path.read_bytes()
    blob = small_vault.write(plaintext)

    with io.BufferedReader(open_blob(small_vault, blob), buffer_size=1000) as reader:
        reader.seek(5000)
        assert reader.read(100) == plaintext[5000:5100]
        assert reader.read() == plaintext[5100:]


def test_no_plaintext_in_vault_folder(small_vault: Vault, carphone_path: Path) -> None:
    plaintext = carphone_path.read_bytes()
    small_vault.write(carphone_path)
    small_vault.write(plaintext)
    stored = all_vault_bytes(small_vault)

    # No 32-byte window of the clip appears anywhere in the vault folder.
    for start in range(0, len(plaintext) - 32, 997):
        assert plaintext[start : start + 32] not in stored
    assert len(list(small_vault.root.rglob("*.tmp"))) == 0


def test_flipped_bit_raises(small_vault: Vault, carphone_path: Path) -> None:
    blob = small_vault.write(carphone_path)
    path = blob_file(small_vault, blob.blob_id)
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + 3 * (4096 + CHUNK_OVERHEAD) + 100] ^= 0x04
    path.write_bytes(bytes(data))

    with open_blob(small_vault, blob) as reader:
        assert reader.read(4096) == carphone_path.read_bytes()[:4096]
        reader.seek(3 * 4096 + 50)
        with pytest.raises(IntegrityError, match="integrity check"):
            reader.read(10)


def test_flipped_header_bit_raises(small_vault: Vault) -> None:
    blob = small_vault.write(os.urandom(10_000))
    path = blob_file(small_vault, blob.blob_id)
    data = bytearray(path.read_bytes())
    data[8] ^= 0x01  # format version
    path.write_bytes(bytes(data))

    with pytest.raises(IntegrityError):
        open_blob(small_vault, blob)


def test_swapped_chunks_raise(small_vault: Vault) -> None:
    blob = small_vault.write(os.urandom(3 * 4096))
    path = blob_file(small_vault, blob.blob_id)
    data = path.read_bytes()
    sealed = 4096 + CHUNK_OVERHEAD
    first = data[HEADER_SIZE : HEADER_SIZE + sealed]
    second = data[HEADER_SIZE + sealed : HEADER_SIZE + 2 * sealed]
    path.write_bytes(
        data[:HEADER_SIZE] + second + first + data[HEADER_SIZE + 2 * sealed :]
    )

    with open_blob(small_vault, blob) as reader, pytest.raises(IntegrityError):
        reader.read(10)


def test_dropped_chunk_raises(small_vault: Vault) -> None:
    blob = small_vault.write(os.urandom(3 * 4096))
    path = blob_file(small_vault, blob.blob_id)
    data = path.read_bytes()
    sealed = 4096 + CHUNK_OVERHEAD
    path.write_bytes(data[: HEADER_SIZE + sealed] + data[HEADER_SIZE + 2 * sealed :])

    with pytest.raises(IntegrityError, match="file size"):
        open_blob(small_vault, blob)


def test_dropped_chunk_with_forged_header_raises(small_vault: Vault) -> None:
    """Dropping the last chunk and shrinking the header to match still fails."""
    from enclave.vault._format import BlobHeader

    blob = small_vault.write(os.urandom(3 * 4096))
    path = blob_file(small_vault, blob.blob_id)
    data = path.read_bytes()
    forged = BlobHeader(blob.blob_id, 4096, 2 * 4096, 2).pack()
    path.write_bytes(
        forged + data[HEADER_SIZE : HEADER_SIZE + 2 * (4096 + CHUNK_OVERHEAD)]
    )

    with open_blob(small_vault, blob) as reader:
        assert reader.size == 2 * 4096
        with pytest.raises(IntegrityError):
            reader.read()


@pytest.mark.parametrize("cut", [1, CHUNK_OVERHEAD, 5000])
def test_truncated_file_raises(small_vault: Vault, cut: int) -> None:
    blob = small_vault.write(os.urandom(3 * 4096))
    path = blob_file(small_vault, blob.blob_id)
    data = path.read_bytes()
    path.write_bytes(data[:-cut])

    with pytest.raises(IntegrityError):
        open_blob(small_vault, blob)


def test_wrong_master_key_raises(
    small_vault: Vault, settings: Settings, tmp_path: Path
) -> None:
    blob = small_vault.write(b"secret video")
    other = Vault(settings.vault_dir, KeyRing.create(tmp_path / "other.key"))

    with pytest.raises(IntegrityError):
        other.read_bytes(blob.blob_id, blob.master_key_id, blob.wrapped_key)


def test_key_of_other_blob_raises(small_vault: Vault) -> None:
    first = small_vault.write(b"first video")
    second = small_vault.write(b"second video")

    with pytest.raises(IntegrityError):
        small_vault.read_bytes(first.blob_id, second.master_key_id, second.wrapped_key)


def test_blob_file_renamed_raises(small_vault: Vault) -> None:
    first = small_vault.write(b"first video")
    second = small_vault.write(b"second video")
    blob_file(small_vault, second.blob_id).write_bytes(
        blob_file(small_vault, first.blob_id).read_bytes()
    )

    with pytest.raises(IntegrityError, match="another blob"):
        small_vault.read_bytes(second.blob_id, first.master_key_id, first.wrapped_key)


def test_delete_removes_file(small_vault: Vault) -> None:
    blob = small_vault.write(b"video")

    small_vault.delete(blob.blob_id)

    assert not blob_file(small_vault, blob.blob_id).exists()
    with pytest.raises(NotFound, match=blob.blob_id):
        small_vault.read_bytes(blob.blob_id, blob.master_key_id, blob.wrapped_key)
    with pytest.raises(NotFound):
        small_vault.delete(blob.blob_id)
    small_vault.delete(blob.blob_id, missing_ok=True)


@pytest.mark.parametrize("blob_id", ["../../etc/passwd", "ABC", "0" * 31, "g" * 32])
def test_invalid_blob_id_rejected(small_vault: Vault, blob_id: str) -> None:
    with pytest.raises(ValidationError, match="invalid blob id"):
        small_vault.path_of(blob_id)


def test_invalid_chunk_size(settings: Settings, keyring: KeyRing) -> None:
    with pytest.raises(ValidationError, match="chunk_size 0"):
        Vault(settings.vault_dir, keyring, chunk_size=0)


def test_closed_reader_raises(small_vault: Vault) -> None:
    blob = small_vault.write(b"video")
    reader = open_blob(small_vault, blob)
    reader.close()

    with pytest.raises(ValueError, match="closed"):
        reader.read(1)


def test_open_asset_uses_data_key(vault: Vault, carphone_path: Path) -> None:
    from enclave.catalog.models import Asset, DataKey

    blob = vault.write(carphone_path)
    asset = Asset(
        id="a" * 32,
        blob_id=blob.blob_id,
        plaintext_size=blob.plaintext_size,
        data_key=DataKey(
            master_key_id=blob.master_key_id, wrapped_key=blob.wrapped_key
        ),
    )

    with open_asset(vault, asset) as reader:
        assert reader.read() == carphone_path.read_bytes()


def test_open_asset_destroyed_raises(vault: Vault) -> None:
    from enclave.catalog.models import Asset

    blob = vault.write(b"video")
    asset = Asset(id="b" * 32, blob_id=blob.blob_id, plaintext_size=5, data_key=None)

    with pytest.raises(NotFound, match="destroyed"):
        open_asset(vault, asset)


def test_open_asset_size_mismatch_raises(vault: Vault) -> None:
    from enclave.catalog.models import Asset, DataKey

    blob = vault.write(b"video")
    asset = Asset(
        id="c" * 32,
        blob_id=blob.blob_id,
        plaintext_size=6,
        data_key=DataKey(
            master_key_id=blob.master_key_id, wrapped_key=blob.wrapped_key
        ),
    )

    with pytest.raises(IntegrityError, match="does not match the catalog"):
        open_asset(vault, asset)


def test_pyav_decodes_from_reader(small_vault: Vault, carphone_path: Path) -> None:
    import av

    blob = small_vault.write(carphone_path)

    with open_blob(small_vault, blob) as reader, av.open(reader) as container:
        frames = sum(1 for _ in container.decode(video=0))
        container.seek(0)
        first = next(container.decode(video=0))

    assert frames == 120
    assert (first.width, first.height) == (176, 144)
