"""Keyed pseudonyms with an encrypted mapping and two-person re-identification.

The ``ai-diagnosis`` profile replaces each source identifier by
HMAC-SHA256(pseudonym key, identifier). The pseudonym key and the mapping key
are random 32-byte keys wrapped by the vault's master key; each mapping entry
is sealed with AES-256-GCM, its pseudonym bound as associated data. Reading
an entry back (:func:`reidentify`) needs a requester who holds the
re-identification role and a different person who approves, and every
attempt, granted or denied, is written to the audit trail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.errors import IntegrityError, NotFound, PermissionDenied, ValidationError

__all__ = ["PseudonymStore", "ReidentificationPolicy", "reidentify"]

log = logging.getLogger(__name__)

KEY_SIZE = 32
NONCE_SIZE = 12
PSEUDONYM_HEX = 32
_KEYS_FILE = "keys.json"


class PseudonymStore:
    """Pseudonym keys and encrypted mapping entries in one owner-only folder.

    Parameters
    ----------
    root
        The folder (created with mode 0700), e.g. ``<home>/pseudonyms``.
    keyring
        The :class:`~enclave.vault.KeyRing` that wraps the two keys.
    """

    def __init__(self, root: str | os.PathLike[str], keyring: Any) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._pseudonym_key, self._mapping_key = self._load_keys(keyring)

    def _load_keys(self, keyring: Any) -> tuple[bytes, bytes]:
        path = self.root / _KEYS_FILE
        if not path.exists():
            keys = {}
            for name in ("pseudonym", "mapping"):
                key_id, wrapped = keyring.wrap(secrets.token_bytes(KEY_SIZE))
                keys[name] = {"master_key_id": key_id, "wrapped": wrapped.hex()}
            _write_private(path, json.dumps(keys).encode())
        keys = json.loads(path.read_text())
        return tuple(  # type: ignore[return-value]
            keyring.unwrap(keys[n]["master_key_id"], bytes.fromhex(keys[n]["wrapped"]))
            for n in ("pseudonym", "mapping")
        )

    @property
    def pseudonym_key(self) -> bytes:
        """The HMAC key of the pseudonyms, for DICOM de-identification."""
        return self._pseudonym_key

    def pseudonym(self, identifier: str, *, namespace: str) -> str:
        """Return the keyed pseudonym of ``identifier`` within ``namespace``."""
        message = f"{namespace}\x00{identifier}".encode()
        return hmac.new(self._pseudonym_key, message, hashlib.sha256).hexdigest()[
            :PSEUDONYM_HEX
        ]

    def record(self, pseudonym: str, entry: dict[str, Any]) -> None:
        """Store the sealed mapping ``pseudonym -> entry``, replacing an older one."""
        _check_pseudonym(pseudonym)
        nonce = secrets.token_bytes(NONCE_SIZE)
        sealed = AESGCM(self._mapping_key).encrypt(
            nonce, json.dumps(entry, sort_keys=True).encode(), pseudonym.encode()
        )
        _write_private(self.root / f"{pseudonym}.bin", nonce + sealed)

    def _open(self, pseudonym: str) -> dict[str, Any]:
        _check_pseudonym(pseudonym)
        path = self.root / f"{pseudonym}.bin"
        if not path.exists():
            raise NotFound(f"pseudonym {pseudonym} has no mapping entry")
        blob = path.read_bytes()
        try:
            plain = AESGCM(self._mapping_key).decrypt(
                blob[:NONCE_SIZE], blob[NONCE_SIZE:], pseudonym.encode()
            )
        except InvalidTag as exc:
            raise IntegrityError(
                "a pseudonym mapping entry failed its integrity check"
            ) from exc
        return json.loads(plain)


def _check_pseudonym(pseudonym: str) -> None:
    if len(pseudonym) != PSEUDONYM_HEX or any(
        c not in "0123456789abcdef" for c in pseudonym
    ):
        raise ValidationError(
            f"pseudonym {pseudonym!r} is invalid; expected {PSEUDONYM_HEX} "
            "lower-case hex digits"
        )


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@dataclass(frozen=True)
class ReidentificationPolicy:
    """Who may request a re-identification and who may approve one."""

    requesters: frozenset[str]
    """Holders of the designated re-identification role."""
    approvers: frozenset[str]
    """People who may give the second approval."""


def reidentify(
    store: PseudonymStore,
    audit: Any,
    pseudonym: str,
    *,
    requester: str,
    approver: str,
    reason: str,
    policy: ReidentificationPolicy,
    source: str = "cli",
) -> dict[str, Any]:
    """Return the mapping entry of ``pseudonym`` under the two-person rule.

    The requester must hold the re-identification role, the approver must be
    an approver and a different person, and a reason must be given. Each
    attempt is audited as ``pseudonym.reidentify`` before anything is
    decrypted; the identity itself never enters the audit trail.

    Raises
    ------
    PermissionDenied
        If the two-person rule is not met (the refusal is audited).
    NotFound
        If the pseudonym has no mapping entry.
    AuditUnavailable
        If the attempt cannot be audited; nothing is decrypted.
    """
    denial = _denial(requester, approver, reason, policy)
    detail = {"approver": approver, "reason": reason}
    if denial:
        audit.append(
            actor=requester,
            action="pseudonym.reidentify",
            outcome="denied",
            source=source,
            target=pseudonym,
            detail={**detail, "denial": denial},
        )
        raise PermissionDenied(f"re-identification of {pseudonym} denied: {denial}")

    _check_pseudonym(pseudonym)
    audit.append(
        actor=requester,
        action="pseudonym.reidentify",
        outcome="success",
        source=source,
        target=pseudonym,
        detail=detail,
    )
    entry = store._open(pseudonym)
    log.info(
        "pseudonym %s re-identified by %s with approval of %s",
        pseudonym,
        requester,
        approver,
    )
    return entry


def _denial(
    requester: str, approver: str, reason: str, policy: ReidentificationPolicy
) -> str:
    if requester not in policy.requesters:
        return f"{requester!r} does not hold the re-identification role"
    if approver == requester:
        return "the approver must be a second person, not the requester"
    if approver not in policy.approvers:
        return f"{approver!r} is not a re-identification approver"
    if not reason or not reason.strip():
        return "a reason is required"
    return ""
