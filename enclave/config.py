"""Locations of the enclave's state, read from the environment.

The defaults put the catalog (SQLite), the vault and the sockets under one
data folder, and the key files in a separate folder, so that a copy of the
data folder alone cannot be decrypted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings", "load_settings"]

DEFAULT_HOME = Path("/var/lib/enclave")
DEFAULT_KEY_DIR = Path("/etc/enclave/keys")
DEFAULT_RUN_DIR = Path("/run/enclave")


@dataclass(frozen=True)
class Settings:
    """Locations and service accounts of one enclave installation."""

    home: Path
    """Data folder: ``vault/`` (ciphertext), ``catalog.sqlite``, working copies."""
    key_dir: Path
    """Folder of ``master.key`` and ``audit.key``; owner-only permissions."""
    run_dir: Path
    """Folder of the Unix sockets of the broker and the audit collector."""
    db_url: str
    """SQLAlchemy URL of the catalog and audit trail."""
    broker_user: str = "enclave-broker"
    """OS user of the broker, the only process that reads the vault and keys."""
    user_prefix: str = "enc-"
    """Prefix of each hub user's OS user name: hub ``alice`` runs as ``enc-alice``."""

    @property
    def vault_dir(self) -> Path:
        return self.home / "vault"

    @property
    def master_key_path(self) -> Path:
        return self.key_dir / "master.key"

    @property
    def audit_key_path(self) -> Path:
        return self.key_dir / "audit.key"

    @property
    def broker_socket(self) -> Path:
        return self.run_dir / "broker.sock"

    @property
    def audit_socket(self) -> Path:
        return self.run_dir / "audit.sock"

    def os_user(self, hub_user: str) -> str:
        """Return the OS user name that the hub user ``hub_user`` runs as."""
        return f"{self.user_prefix}{hub_user}"

    def hub_user(self, os_user: str) -> str | None:
        """Return the hub user of an OS user name, or None for other accounts."""
        if not os_user.startswith(self.user_prefix):
            return None
        return os_user[len(self.user_prefix) :]


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings from ``ENCLAVE_*`` environment variables.

    ``ENCLAVE_HOME`` (default ``/var/lib/enclave``), ``ENCLAVE_KEY_DIR``
    (default ``/etc/enclave/keys``), ``ENCLAVE_RUN_DIR`` (default
    ``/run/enclave``), ``ENCLAVE_DB_URL`` (default: SQLite in the data folder),
    ``ENCLAVE_BROKER_USER`` and ``ENCLAVE_USER_PREFIX``.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("ENCLAVE_HOME", DEFAULT_HOME))
    db_url = env.get("ENCLAVE_DB_URL") or f"sqlite:///{home / 'catalog.sqlite'}"
    return Settings(
        home=home,
        key_dir=Path(env.get("ENCLAVE_KEY_DIR", DEFAULT_KEY_DIR)),
        run_dir=Path(env.get("ENCLAVE_RUN_DIR", DEFAULT_RUN_DIR)),
        db_url=db_url,
        broker_user=env.get("ENCLAVE_BROKER_USER", "enclave-broker"),
        user_prefix=env.get("ENCLAVE_USER_PREFIX", "enc-"),
    )
