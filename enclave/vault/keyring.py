"""The master key that wraps every data key of the vault.

The master key is 32 random bytes in a file that only its owner may read. It
never encrypts data itself: HKDF-SHA256 derives from it a key-encryption key
for AES key wrap (RFC 3394) and, separately, the public key id. The id is a
fingerprint of a derived value, never of the raw key, so publishing it (in the
catalog, in logs) reveals nothing that helps recover the key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from enclave.errors import ConfigurationError, IntegrityError, ValidationError

__all__ = ["DATA_KEY_SIZE", "MASTER_KEY_SIZE", "KeyRing"]

log = logging.getLogger(__name__)

MASTER_KEY_SIZE = 32
DATA_KEY_SIZE = 32
_KEK_INFO = b"enclave vault key-encryption key v1"
_KEY_ID_INFO = b"enclave vault master key id v1"


def _derive(master_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        master_key
    )


def _is_inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


class KeyRing:
    """The loaded master key: wraps and unwraps the data keys of vault blobs.

    Create the key file once with :meth:`create` and read it with
    :meth:`load`. The file must be readable by its owner only (mode 0600) and
    must live outside the vault folder, so that a copy of the vault alone
    cannot be decrypted.

    Parameters
    ----------
    master_key
        The 32-byte master key.
    path
        The key file it was read from, if any.
    """

    def __init__(self, master_key: bytes, path: Path | None = None) -> None:
        if len(master_key) != MASTER_KEY_SIZE:
            raise ValidationError(
                f"master key must be {MASTER_KEY_SIZE} bytes, got {len(master_key)}"
            )
        self.path = path
        self._kek = _derive(master_key, _KEK_INFO)
        self.master_key_id = hashlib.sha256(
            _derive(master_key, _KEY_ID_INFO)
        ).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"KeyRing(master_key_id={self.master_key_id!r}, path={self.path!r})"

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Generate a new master key and write it to ``path`` with mode 0600.

        Raises
        ------
        ConfigurationError
            If ``path`` already exists: overwriting a master key would make
            every blob it wraps unreadable.
        """
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        master_key = secrets.token_bytes(MASTER_KEY_SIZE)

        # O_EXCL: never replace an existing key, and never follow a planted link.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise ConfigurationError(
                f"master key file {path} already exists; keep it, or move it away "
                "first if you really mean to start a new vault"
            ) from None
        try:
            os.fchmod(fd, 0o600)  # the umask may have removed bits, never added
            os.write(fd, master_key)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_folder(path.parent)

        keyring = cls(master_key, path)
        log.info("created master key %s at %s", keyring.master_key_id, path)
        return keyring

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        vault_dir: str | os.PathLike[str] | None = None,
    ) -> KeyRing:
        """Read the master key from ``path``.

        Raises
        ------
        ConfigurationError
            If the file is missing, not a regular file, readable or writable by
            group or others, not 32 bytes long, or inside ``vault_dir``. The
            message names the command that fixes it.
        """
        path = Path(path)
        if vault_dir is not None and _is_inside(path, Path(vault_dir)):
            raise ConfigurationError(
                f"master key file {path} is inside the vault folder {vault_dir}; "
                "move it to a separate key folder so that a copy of the vault "
                "cannot be decrypted"
            )
        try:
            info = path.lstat()
        except FileNotFoundError:
            raise ConfigurationError(
                f"master key file {path} not found; run 'enclave init' to create it"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"master key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigurationError(
                f"master key file {path} has mode {stat.S_IMODE(info.st_mode):04o}, "
                f"so group or others can access it; run 'chmod 600 {path}'"
            )

        master_key = path.read_bytes()
        if len(master_key) != MASTER_KEY_SIZE:
            raise ConfigurationError(
                f"master key file {path} contains {len(master_key)} bytes, expected "
                f"{MASTER_KEY_SIZE}; restore it from the key backup"
            )
        return cls(master_key, path)

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Wrap a 32-byte data key with AES key wrap (RFC 3394).

        Returns
        -------
        tuple of str and bytes
            The master key id and the 40-byte wrapped key.
        """
        if len(data_key) != DATA_KEY_SIZE:
            raise ValidationError(
                f"data key must be {DATA_KEY_SIZE} bytes, got {len(data_key)}"
            )
        return self.master_key_id, aes_key_wrap(self._kek, data_key)

    def unwrap(self, master_key_id: str, wrapped: bytes) -> bytes:
        """Unwrap a data key; raise IntegrityError if it fails its check."""
        if master_key_id != self.master_key_id:
            raise IntegrityError(
                f"data key is wrapped by master key {master_key_id!r}, but the loaded "
                f"master key is {self.master_key_id!r}"
            )
        try:
            data_key = aes_key_unwrap(self._kek, bytes(wrapped))
        except (InvalidUnwrap, ValueError) as exc:
            raise IntegrityError("data key failed its integrity check") from exc
        if len(data_key) != DATA_KEY_SIZE:
            raise IntegrityError("data key failed its integrity check")
        return data_key


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
