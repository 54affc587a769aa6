"""Creation of the OS accounts that researchers' servers and hub services run as."""

from __future__ import annotations

import logging
import os
import pwd
import re
import subprocess
import threading
from pathlib import Path

from enclave.errors import ConfigurationError, ValidationError

__all__ = [
    "ensure_os_user",
    "ensure_runtime_dir",
    "ensure_service_user",
    "remove_os_user",
]

log = logging.getLogger(__name__)

# useradd's own rule for portable names, shortened to the 32 characters that
# utmp and most tools accept.
_OS_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
NOLOGIN_SHELL = "/usr/sbin/nologin"

# useradd takes a lock on /etc/passwd and fails, not waits, when another
# useradd holds it, so the hub's concurrent spawns take turns here.
_passwd_lock = threading.Lock()


def _check_name(name: str, allowed_prefixes: tuple[str, ...]) -> None:
    if not _OS_NAME.match(name):
        raise ValidationError(
            f"OS user name {name!r} is invalid: use at most 32 lower-case letters, "
            "digits, '_', '.' or '-', starting with a letter or '_'"
        )
    if not name.startswith(allowed_prefixes):
        raise ValidationError(
            f"OS user name {name!r} does not start with "
            f"{' or '.join(allowed_prefixes)}; "
            "the enclave only creates and removes accounts with its own prefixes"
        )


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ConfigurationError(
            f"{command[0]} failed with exit status {result.returncode}: "
            f"{result.stderr.strip()}"
        )


def _check_unprivileged(entry: pwd.struct_passwd) -> None:
    # An account with uid or gid 0 would run the researcher's code as root.
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ConfigurationError(
            f"OS user {entry.pw_name!r} has uid {entry.pw_uid} and gid {entry.pw_gid}; "
            "an enclave account must not be in the root user or group"
        )


def ensure_os_user(name: str, home_root: Path, *, prefix: str) -> pwd.struct_passwd:
    """Create the OS user ``name`` with a private home under ``home_root``.

    An existing account is kept as it is, but rejected when it has uid or
    gid 0. A new account gets its own group, the shell ``/usr/sbin/nologin``
    and a home folder of mode 0700. Only names starting with ``prefix`` are
    accepted, so a hub user cannot name an existing system account.

    Raises
    ------
    ValidationError
        The name is not a valid OS user name or lacks the prefix.
    ConfigurationError
        ``useradd`` failed, or the existing account is privileged.
    """
    _check_name(name, (prefix,))
    with _passwd_lock:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            entry = None
        if entry is None:
            home_root.mkdir(mode=0o711, parents=True, exist_ok=True)
            home = home_root / name
            _run(
                [
                    "useradd",
                    "--create-home",
                    "--home-dir",
                    str(home),
                    "--shell",
                    NOLOGIN_SHELL,
                    "--user-group",
                    "--comment",
                    "enclave researcher",
                    name,
                ]
            )
            os.chmod(home, 0o700)
            entry = pwd.getpwnam(name)
            log.info(
                "created OS user %s (uid %d) with home %s", name, entry.pw_uid, home
            )

    _check_unprivileged(entry)
    return entry


def ensure_runtime_dir(root: Path, entry: pwd.struct_passwd) -> Path:
    """Create ``root/<uid>`` (mode 0700, owned by the user) for Jupyter's runtime files.

    Kernels that use the ipc transport put their Unix sockets here, and a
    socket path may be at most 107 bytes long, so this folder has a short
    path, unlike ``~/.local/share/jupyter/runtime``.

    Raises
    ------
    ConfigurationError
        The folder exists but belongs to another user.
    """
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    folder = root / str(entry.pw_uid)
    try:
        folder.mkdir(mode=0o700)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    except FileExistsError:
        pass
    info = folder.lstat()
    if not folder.is_dir() or folder.is_symlink() or info.st_uid != entry.pw_uid:
        raise ConfigurationError(
            f"runtime folder {folder} is not a folder owned by {entry.pw_name}; "
            "remove it so that the spawner can create it again"
        )
    os.chmod(folder, 0o700)
    return folder


def ensure_service_user(name: str) -> pwd.struct_passwd:
    """Create the system account ``name`` of a hub service when it is missing."""
    _check_name(name, ("enclave-",))
    with _passwd_lock:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            _run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    NOLOGIN_SHELL,
                    "--user-group",
                    "--comment",
                    "enclave service",
                    name,
                ]
            )
            entry = pwd.getpwnam(name)
            log.info("created service user %s (uid %d)", name, entry.pw_uid)

    _check_unprivileged(entry)
    return entry


def remove_os_user(name: str, *, prefix: str) -> None:
    """Delete the OS user ``name`` and its home folder; missing users are skipped."""
    _check_name(name, (prefix,))
    with _passwd_lock:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return
        _run(["userdel", "--remove", name])
    log.info("removed OS user %s", name)
