"""Accounts of the local OpenID Connect provider, and the demo accounts.

The provider (``hub_config/oidc/provider.mjs``) reads an accounts file that
this module writes. Passwords are stored only as salted scrypt hashes. The
TOTP secret of an account with a second factor is stored in plain text,
because the provider needs it to compute the expected codes, so the file is
created with mode 0600.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import struct
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from enclave.errors import ValidationError

__all__ = [
    "ROLE_GROUPS",
    "Account",
    "DEMO_ACCOUNTS",
    "demo_accounts",
    "hash_password",
    "new_totp_secret",
    "totp_code",
    "totp_uri",
    "validate_username",
    "write_accounts_file",
]

ROLE_GROUPS = (
    "researchers",
    "ethics-committee",
    "data-stewards",
    "auditors",
    "security-admins",
)
"""Groups that give a role in the enclave. The hub admits members of any of them."""

# scrypt cost N = 2**15, r = 8, p = 1: each check needs 128 * N * r = 32 MiB
# of memory and took 0.24 s in Python on one core of the 2-core AMD EPYC
# development machine (measured with hash_password, mean of 5 runs).
SCRYPT_LOG_N = 15
SCRYPT_R = 8
SCRYPT_P = 1
TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6

# Stable subject identifiers: the same user name maps to the same ``sub``
# across restarts, so a re-generated accounts file names the same people.
_SUB_NAMESPACE = uuid.UUID("0f1c7a52-4b3e-4f7e-9a55-2f6b1f0c9e11")
_USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class Account:
    """One person who can sign in at the provider."""

    username: str
    name: str
    groups: tuple[str, ...]
    password: str = field(repr=False)
    totp_secret: str | None = field(default=None, repr=False)
    """Base32 TOTP secret. When set, sign-in requires a code after the password."""

    @property
    def email(self) -> str:
        return f"{self.username}@enclave.invalid"

    @property
    def sub(self) -> str:
        return str(uuid.uuid5(_SUB_NAMESPACE, self.username))


DEMO_ACCOUNTS: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("alice", "Alice Researcher", ("researchers", "dept-ultrasound"), False),
    ("bob", "Bob Researcher", ("researchers", "dept-cardiology"), False),
    ("carol", "Carol Ethics", ("ethics-committee",), False),
    ("dave", "Dave Ethics", ("ethics-committee",), False),
    ("erin", "Erin Steward", ("data-stewards", "dept-it-security"), False),
    ("frank", "Frank Auditor", ("auditors",), False),
    ("grace", "Grace Security", ("security-admins", "dept-it-security"), True),
)
"""Demo people: user name, display name, groups, and whether they use TOTP.

``bob`` is a researcher who is not a member of the demo project.
"""


def demo_accounts(password: str) -> list[Account]:
    """Build the demo accounts, all with ``password`` and fresh TOTP secrets."""
    return [
        Account(
            username=username,
            name=name,
            groups=groups,
            password=password,
            totp_secret=new_totp_secret() if uses_totp else None,
        )
        for username, name, groups, uses_totp in DEMO_ACCOUNTS
    ]


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Hash ``password`` with scrypt in the format the provider verifies.

    The format is ``scrypt$ln=15$r=8$p=1$<salt>$<hash>`` with base64 salt and hash.
    """
    if not password:
        raise ValidationError("password is empty: choose a non-empty password")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=2**SCRYPT_LOG_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=256 * 2**SCRYPT_LOG_N * SCRYPT_R,
        dklen=32,
    )
    encoded_salt = base64.b64encode(salt).decode("ascii")
    encoded_hash = base64.b64encode(digest).decode("ascii")
    cost = f"ln={SCRYPT_LOG_N}$r={SCRYPT_R}$p={SCRYPT_P}"
    return f"scrypt${cost}${encoded_salt}${encoded_hash}"


def new_totp_secret() -> str:
    """Return a random 160-bit TOTP secret in base32, as authenticator apps take it."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii")


def totp_code(secret: str, at: float | None = None) -> str:
    """Compute the RFC 6238 code (HMAC-SHA1, 30 s, 6 digits) of ``secret`` at ``at``."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // TOTP_STEP_SECONDS)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**TOTP_DIGITS).zfill(TOTP_DIGITS)


def totp_uri(account: Account, issuer: str = "Enclave") -> str:
    """Return the ``otpauth://`` URI that an authenticator app imports."""
    if account.totp_secret is None:
        raise ValidationError(f"account {account.username!r} has no TOTP secret")
    return (
        f"otpauth://totp/{issuer}:{account.username}?secret={account.totp_secret}"
        f"&issuer={issuer}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECONDS}"
    )


def validate_username(username: str) -> str:
    """Check that ``username`` is usable as a hub and an OS user name suffix."""
    if not username or len(username) > 24:
        raise ValidationError(f"user name {username!r} must have 1 to 24 characters")
    if not set(username) <= _USERNAME_CHARS or not username[0].isalnum():
        raise ValidationError(
            f"user name {username!r} may contain only lower-case letters, digits, "
            "'-', '_' and '.', and must start with a letter or digit"
        )
    return username


def write_accounts_file(path: Path, accounts: Iterable[Account]) -> None:
    """Write the provider's accounts file (mode 0600) with hashed passwords."""
    records = []
    seen: set[str] = set()
    for account in accounts:
        validate_username(account.username)
        if account.username in seen:
            raise ValidationError(f"user name {account.username!r} is listed twice")
        seen.add(account.username)
        record = {
            "sub": account.sub,
            "username": account.username,
            "name": account.name,
            "email": account.email,
            "groups": list(account.groups),
            "password_hash": hash_password(account.password),
        }
        if account.totp_secret:
            record["totp_secret"] = account.totp_secret
        records.append(record)

    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        json.dump({"accounts": records}, stream, indent=2)
    os.replace(tmp, path)
