"""OS accounts and file ownership of an installation.

The vault, the key files and the catalog belong to the broker's OS user, and
only that user can read them. Researchers' processes run as other OS users
and reach data only through the broker's socket.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from enclave.config import Settings
from enclave.errors import ConfigurationError

__all__ = ["ensure_service_user", "fix_ownership", "prepare_folders"]

log = logging.getLogger(__name__)


def ensure_service_user(name: str) -> pwd.struct_passwd:
    """Return the OS account ``name``, creating it as a system user when missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise ConfigurationError(
            f"OS user {name!r} does not exist; run 'enclave init' as root to create it"
        )
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", nologin, name],
        check=True,
        capture_output=True,
    )
    log.info("created OS user %s", name)
    return pwd.getpwnam(name)


def prepare_folders(settings: Settings) -> None:
    """Create the data, key and socket folders with their owners and modes."""
    owner = _service_owner(settings)
    for folder, mode in (
        (settings.home, 0o700),
        (settings.vault_dir, 0o700),
        (settings.key_dir, 0o700),
        (settings.run_dir, 0o755),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, mode)
        if owner is not None:
            os.chown(folder, owner.pw_uid, owner.pw_gid)


def fix_ownership(settings: Settings) -> None:
    """Give every file under the data and key folders to the broker's OS user.

    Commands run by root (ingest, derive, project) create files as root. The
    broker must own them to read them, and no other account may read them.
    """
    owner = _service_owner(settings)
    if owner is None:
        return
    for top in (settings.home, settings.key_dir):
        if not top.exists():
            continue
        for path in [top, *top.rglob("*")]:
            if path.is_symlink():
                continue
            stat = path.lstat()
            if (stat.st_uid, stat.st_gid) != (owner.pw_uid, owner.pw_gid):
                os.chown(path, owner.pw_uid, owner.pw_gid)


def _service_owner(settings: Settings) -> pwd.struct_passwd | None:
    # Only root can hand files to another account; an unprivileged install
    # (a developer's own folder) keeps the caller as the owner.
    if os.geteuid() != 0:
        return None
    return ensure_service_user(settings.broker_user)


def is_within(path: Path, folder: Path) -> bool:
    """Return True when ``path`` lies inside ``folder`` after resolving links."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
