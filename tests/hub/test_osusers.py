"""OS accounts for researchers: names, homes and what is never created."""

from __future__ import annotations

import os
import pwd
import secrets
import stat
from pathlib import Path

import pytest

from enclave.errors import ValidationError
from enclave.hub.osusers import NOLOGIN_SHELL, ensure_os_user, remove_os_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates OS users")


@pytest.mark.parametrize("name", ["root", "alice", "enclave-broker"])
def test_name_without_prefix_rejected(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not start with enc-"):
        ensure_os_user(name, tmp_path, prefix="enc-")


@pytest.mark.parametrize("name", ["enc-Alice", "enc-a/b", "enc-" + "x" * 40, "enc-a b"])
def test_invalid_name_rejected(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="is invalid"):
        ensure_os_user(name, tmp_path, prefix="enc-")


def test_new_user_private_home(tmp_path: Path) -> None:
    home_root = tmp_path / "homes"
    name = f"enc-t{secrets.token_hex(4)}"
    try:
        entry = ensure_os_user(name, home_root, prefix="enc-")

        home = Path(entry.pw_dir)
        assert entry.pw_uid != 0
        assert entry.pw_gid != 0
        assert entry.pw_shell == NOLOGIN_SHELL
        assert home == home_root / name
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert home.stat().st_uid == entry.pw_uid
        assert ensure_os_user(name, home_root, prefix="enc-").pw_uid == entry.pw_uid
    finally:
        remove_os_user(name, prefix="enc-")

    with pytest.raises(KeyError):
        pwd.getpwnam(name)
