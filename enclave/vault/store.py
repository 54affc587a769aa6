"""The vault: envelope-encrypted blobs in a folder only the broker can read.

Each blob is sealed with its own random 256-bit data key, and the data key is
stored only in wrapped form, in the catalog. Destroying an asset therefore
means deleting its wrapped data key (crypto-shredding) and its blob file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.errors import ConfigurationError, IntegrityError, NotFound, ValidationError
from enclave.vault._format import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    NONCE_SIZE,
    BlobHeader,
    count_chunks,
)
from enclave.vault.keyring import DATA_KEY_SIZE, KeyRing, _fsync_folder, _is_inside
from enclave.vault.reader import VaultReader

if TYPE_CHECKING:
    from enclave.catalog.models import Asset

__all__ = ["StoredBlob", "Vault", "open_asset"]

log = logging.getLogger(__name__)

_BLOB_ID = re.compile(r"[0-9a-f]{32}")
_SUFFIX = ".blob"


@dataclass(frozen=True)
class StoredBlob:
    """Catalog record of a stored blob: its id, wrapped data key and digest."""

    blob_id: str
    master_key_id: str
    wrapped_key: bytes
    plaintext_size: int
    plaintext_sha256: str
    chunk_size: int


class Vault:
    """A folder of encrypted blobs, each sealed with its own data key.

    Parameters
    ----------
    root
        The vault folder. It is created with mode 0700 if missing; an existing
        folder that group or others can access is rejected.
    keyring
        The master key that wraps the data keys. Its key file must not be
        inside ``root``.
    chunk_size
        Plaintext bytes per sealed chunk of new blobs (default 1 MiB).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        keyring: KeyRing,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValidationError(
                f"chunk_size {chunk_size} is out of range; "
                f"use 1 to {MAX_CHUNK_SIZE} bytes"
            )
        self.root = Path(root)
        self.keyring = keyring
        self.chunk_size = chunk_size

        if keyring.path is not None and _is_inside(keyring.path, self.root):
            raise ConfigurationError(
                f"master key file {keyring.path} is inside the vault folder "
                f"{self.root}; "
                "move it to a separate key folder so that a copy of the vault "
                "cannot be decrypted"
            )
        if not self.root.exists():
            self.root.mkdir(mode=0o700, parents=True)
            os.chmod(self.root, 0o700)
        mode = stat.S_IMODE(self.root.stat().st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"vault folder {self.root} has mode {mode:04o}, so group or others "
                f"can access it; run 'chmod 700 {self.root}'"
            )

    def __repr__(self) -> str:
        return (
            f"Vault({str(self.root)!r}, master_key_id={self.keyring.master_key_id!r})"
        )

    def path_of(self, blob_id: str) -> Path:
        """Path of the blob file of ``blob_id`` (which need not exist)."""
        if not _BLOB_ID.fullmatch(blob_id):
            raise ValidationError(
                f"invalid blob id {blob_id!r}; expected 32 lowercase hex digits"
            )
        return self.root / blob_id[:2] / f"{blob_id}{_SUFFIX}"

    def write(self, source: str | os.PathLike[str] | bytes | BinaryIO) -> StoredBlob:
        """Encrypt ``source`` into a new blob.

        The ciphertext goes to a temporary file in the vault folder that is
        synced and renamed into place, so a blob file is either complete or
        absent. Plaintext is never written to disk.

        Parameters
        ----------
        source
            A file path, the bytes themselves, or a binary file object. A
            file object that cannot seek is read into memory first.

        Returns
        -------
        StoredBlob
            The blob id, the wrapped data key and the plaintext's size and
            SHA-256.
        """
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self._write_stream(io.BytesIO(source), len(source))
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as file:
                return self._write_stream(file, os.fstat(file.fileno()).st_size)

        if source.seekable():
            start = source.tell()
            size = source.seek(0, io.SEEK_END) - start
            source.seek(start)
            return self._write_stream(source, size)
        # NOTE: a non-seekable stream is held in memory, because the header
        # (authenticated with every chunk) needs the plaintext length first.
        data = source.read()
        return self._write_stream(io.BytesIO(data), len(data))

    def open(self, blob_id: str, master_key_id: str, wrapped_key: bytes) -> VaultReader:
        """Open a blob for reading; the reader decrypts chunks on demand.

        Raises
        ------
        NotFound
            If the blob file does not exist.
        IntegrityError
            If the data key does not unwrap or the blob file is damaged.
        """
        path = self.path_of(blob_id)
        data_key = self.keyring.unwrap(master_key_id, wrapped_key)
        try:
            file = open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"vault blob {blob_id} not found in {self.root}") from None
        return VaultReader(file, blob_id, data_key)

    def read_bytes(self, blob_id: str, master_key_id: str, wrapped_key: bytes) -> bytes:
        """Decrypt a whole blob into memory."""
        with self.open(blob_id, master_key_id, wrapped_key) as reader:
            return reader.readall()

    def exists(self, blob_id: str) -> bool:
        return self.path_of(blob_id).exists()

    def delete(self, blob_id: str, *, missing_ok: bool = False) -> None:
        """Delete a blob file.

        Overwriting the file first would not help: SSDs and copy-on-write file
        systems write new blocks elsewhere and keep the old ones. The
        ciphertext is unreadable once its wrapped data key is deleted from
        the catalog, so destruction is that deletion plus this one.
        """
        path = self.path_of(blob_id)
        try:
            path.unlink()
        except FileNotFoundError:
            if missing_ok:
                return
            raise NotFound(f"vault blob {blob_id} not found in {self.root}") from None
        _fsync_folder(path.parent)
        log.debug("deleted vault blob %s", blob_id)

    def _write_stream(self, source: BinaryIO, size: int) -> StoredBlob:
        blob_id = secrets.token_hex(16)
        data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_SIZE)
        aead = AESGCM(data_key)
        header = BlobHeader(
            blob_id, self.chunk_size, size, count_chunks(size, self.chunk_size)
        )
        final_path = self.path_of(blob_id)
        final_path.parent.mkdir(mode=0o700, exist_ok=True)
        temp_path = final_path.with_name(f".{blob_id}.tmp")

        digest = hashlib.sha256()
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(header.pack())
                for index in range(header.total_chunks):
                    chunk = _read_exactly(source, header.chunk_plaintext_size(index))
                    digest.update(chunk)
                    nonce = os.urandom(NONCE_SIZE)
                    out.write(nonce)
                    out.write(aead.encrypt(nonce, chunk, header.chunk_aad(index)))
                if source.read(1):
                    raise ValidationError(
                        "the source grew while it was being stored; store it again "
                        "once nothing writes to it"
                    )
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp_path, final_path)
        except BaseException:
            temp_path.unlink(missing_ok=True)
            raise
        _fsync_folder(final_path.parent)

        master_key_id, wrapped_key = self.keyring.wrap(data_key)
        log.debug("stored vault blob %s (%d bytes)", blob_id, size)
        return StoredBlob(
            blob_id=blob_id,
            master_key_id=master_key_id,
            wrapped_key=wrapped_key,
            plaintext_size=size,
            plaintext_sha256=digest.hexdigest(),
            chunk_size=self.chunk_size,
        )


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    while len(data) < size:
        more = source.read(size - len(data))
        if not more:
            raise ValidationError(
                "the source shrank while it was being stored; store it again once "
                "nothing writes to it"
            )
        data += more
    return data


def open_asset(vault: Vault, asset: Asset) -> VaultReader:
    """Open the plaintext of a catalog asset through its wrapped data key.

    Raises
    ------
    NotFound
        If the asset has been destroyed (its data key deleted).
    IntegrityError
        If the key does not unwrap or the blob is damaged.
    """
    key = asset.data_key
    if key is None or asset.destroyed_at is not None:
        raise NotFound(f"asset {asset.id} has been destroyed; its data key is gone")
    reader = vault.open(asset.blob_id, key.master_key_id, key.wrapped_key)
    if reader.size != asset.plaintext_size:
        reader.close()
        raise IntegrityError(
            f"vault blob of asset {asset.id} does not match the catalog"
        )
    return reader
