"""What the launcher leaves on disk: private keys and secrets, no passwords."""

from __future__ import annotations

import stat

import pytest

from enclave.hub.launch import Running
from tests.fixtures.hub import ServerProcess

pytestmark = pytest.mark.e2e

SECRET_FILES = [
    "idp/provider.json",
    "idp/accounts.json",
    "idp/signing-key.jwk.json",
    "idp/cookie-keys.json",
    "hub/oidc-client-secret",
    "hub/crypt.key",
]


@pytest.mark.parametrize("relative", SECRET_FILES)
def test_secret_file_owner_only(hub: Running, relative: str) -> None:
    path = hub.state_dir / relative

    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("relative", ["", "idp", "hub", "logs"])
def test_state_folder_owner_only(hub: Running, relative: str) -> None:
    folder = hub.state_dir / relative

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_accounts_file_has_no_password(hub: Running) -> None:
    text = (hub.state_dir / "idp" / "accounts.json").read_text()

    for account in hub.accounts.values():
        assert account.password not in text
    assert "scrypt$ln=15$r=8$p=1$" in text


def test_logs_have_no_secrets(hub: Running, alice_server: ServerProcess) -> None:
    # alice_server makes sure that a sign-in and a spawn were logged.
    secrets = [
        (hub.state_dir / "hub" / "oidc-client-secret").read_text().strip(),
        (hub.state_dir / "hub" / "crypt.key").read_text().strip(),
        *(account.password for account in hub.accounts.values()),
    ]

    for log_file in (hub.state_dir / "logs").iterdir():
        text = log_file.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, log_file.name
