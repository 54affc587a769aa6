"""Password hashes and TOTP codes agree between Python and the Node provider."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from enclave.errors import ValidationError
from enclave.hub.accounts import (
    Account,
    hash_password,
    totp_code,
    validate_username,
    write_accounts_file,
)

OIDC_DIR = Path(__file__).resolve().parents[2] / "hub_config" / "oidc"
# RFC 6238 appendix B uses the ASCII key "12345678901234567890" for SHA-1.
RFC6238_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


def run_node(script: str) -> str:
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=OIDC_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("at", "code"),
    [
        (59, "287082"),
        (1111111109, "081804"),
        (1111111111, "050471"),
        (1234567890, "005924"),
        (2000000000, "279037"),
    ],
)
def test_totp_code_rfc6238_vectors(at: int, code: str) -> None:
    assert totp_code(RFC6238_SECRET, at) == code


def test_totp_node_matches_python() -> None:
    at = 1234567890
    script = (
        "import { verifyTotp } from './totp.mjs';"
        f"console.log(verifyTotp('{RFC6238_SECRET}', '{totp_code(RFC6238_SECRET, at)}',"
        f" {at}, 0), verifyTotp('{RFC6238_SECRET}', '123456', {at}, 0));"
    )

    assert run_node(script) == f"{at // 30} null"


def test_password_hash_verified_by_node() -> None:
    encoded = hash_password("correct horse")
    script = (
        "import { verifyPassword } from './passwords.mjs';"
        f"const h = {json.dumps(encoded)};"
        "console.log(await verifyPassword('correct horse', h),"
        " await verifyPassword('wrong horse', h),"
        " await verifyPassword('correct horse', undefined));"
    )

    assert encoded.startswith("scrypt$ln=15$r=8$p=1$")
    assert run_node(script) == "true false false"


def test_password_hash_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_empty_password_rejected() -> None:
    with pytest.raises(ValidationError, match="password is empty"):
        hash_password("")


def test_accounts_file_private_and_hashed(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    account = Account("alice", "Alice", ("researchers",), "s3cret-pass", "ABCDEFGH")

    write_accounts_file(path, [account])

    text = path.read_text()
    record = json.loads(text)["accounts"][0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "s3cret-pass" not in text
    assert record["username"] == "alice"
    assert record["sub"] == account.sub
    assert record["groups"] == ["researchers"]
    assert record["totp_secret"] == "ABCDEFGH"


def test_accounts_file_duplicate_rejected(tmp_path: Path) -> None:
    account = Account("alice", "Alice", ("researchers",), "pw")

    with pytest.raises(ValidationError, match="listed twice"):
        write_accounts_file(tmp_path / "accounts.json", [account, account])


@pytest.mark.parametrize("name", ["", "Alice", "../etc", "a b", "-dash", "x" * 25])
def test_invalid_username_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="user name"):
        validate_username(name)
