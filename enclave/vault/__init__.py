"""Envelope encryption of stored video: a master key wraps one data key per blob."""

from __future__ import annotations

from enclave.vault.keyring import KeyRing
from enclave.vault.reader import VaultReader
from enclave.vault.store import StoredBlob, Vault, open_asset

__all__ = ["KeyRing", "StoredBlob", "Vault", "VaultReader", "open_asset"]
