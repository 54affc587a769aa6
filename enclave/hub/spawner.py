"""The spawner that runs each researcher's server as the researcher's own OS user."""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from traitlets import Bool, Unicode, default

from enclave.config import load_settings
from enclave.hub.osusers import ensure_os_user, ensure_runtime_dir

__all__ = ["EnclaveSpawner"]

# Variables that the user's server may see. Everything else named ENCLAVE_*
# stays in the hub: the key folder, the database URL and the data folder
# would point a researcher's code at material only the broker may read.
USER_VISIBLE_ENCLAVE_VARS = (
    "ENCLAVE_BROKER_SOCKET",
    "ENCLAVE_AUDIT_SOCKET",
    "ENCLAVE_RUN_DIR",
    "ENCLAVE_USER_PREFIX",
)


class EnclaveSpawner(LocalProcessSpawner):
    """Start the single-user server as OS user ``<user_prefix><hub name>``.

    The hub user ``alice`` runs as ``enc-alice``, never as an OS account
    with the hub name itself, so a hub user called ``root`` runs as
    ``enc-root``. The account is created on first spawn with a private home
    under :attr:`home_root`.
    """

    user_prefix = Unicode(
        help="""Prefix of the OS user name of each hub user.

        The hub user ``alice`` runs as ``<user_prefix>alice``. Defaults to
        ``ENCLAVE_USER_PREFIX`` (``enc-``). Must not be empty.
        """,
    ).tag(config=True)

    @default("user_prefix")
    def _default_user_prefix(self) -> str:
        return load_settings().user_prefix

    home_root = Unicode(
        "/home/enclave",
        help="""Folder under which new OS users get their home folder (mode 0700).""",
    ).tag(config=True)

    runtime_root = Unicode(
        "/run/enclave-users",
        help="""Folder of the users' Jupyter runtime folders, ``<runtime_root>/<uid>``.

        Passed as JUPYTER_RUNTIME_DIR. Kernels on the ipc transport create their
        Unix sockets there, and a socket path may be at most 107 bytes long, so
        keep this path short.
        """,
    ).tag(config=True)

    example_notebooks = Unicode(
        str(Path(__file__).resolve().parents[2] / "notebooks"),
        help="""Folder of example notebooks copied into ``~/examples`` on each spawn.

        A notebook the user already has there is left as it is, so edits
        survive. Empty to copy nothing.
        """,
    ).tag(config=True)

    create_os_users = Bool(
        True,
        help="""Create the OS user on first spawn when it does not exist.

        When False, a missing OS user makes the spawn fail.
        """,
    ).tag(config=True)

    broker_socket = Unicode(
        help="""Unix socket of the data broker, passed as ENCLAVE_BROKER_SOCKET.

        Defaults to the broker socket of the enclave settings.
        """,
    ).tag(config=True)

    @default("broker_socket")
    def _default_broker_socket(self) -> str:
        return str(load_settings().broker_socket)

    audit_socket = Unicode(
        help="""Unix socket of the audit collector, passed as ENCLAVE_AUDIT_SOCKET.

        Defaults to the audit socket of the enclave settings.
        """,
    ).tag(config=True)

    @default("audit_socket")
    def _default_audit_socket(self) -> str:
        return str(load_settings().audit_socket)

    run_dir = Unicode(
        help="""Folder of the enclave's sockets, passed as ENCLAVE_RUN_DIR.

        Defaults to the run folder of the enclave settings.
        """,
    ).tag(config=True)

    @default("run_dir")
    def _default_run_dir(self) -> str:
        return str(load_settings().run_dir)

    @property
    def os_username(self) -> str:
        """OS user name that this hub user's server runs as."""
        if not self.user_prefix:
            raise ValueError(
                "EnclaveSpawner.user_prefix is empty; set it to e.g. 'enc-'"
            )
        return f"{self.user_prefix}{self.user.name}"

    def _passwd(self) -> pwd.struct_passwd:
        return pwd.getpwnam(self.os_username)

    async def start(self) -> Any:
        """Create the OS user when needed, then start the server as that user."""
        if self.create_os_users:
            await asyncio.to_thread(
                ensure_os_user,
                self.os_username,
                Path(self.home_root),
                prefix=self.user_prefix,
            )
        entry = self._passwd()
        if entry.pw_uid == 0 or entry.pw_gid == 0:
            raise PermissionError(
                f"OS user {self.os_username!r} is privileged (uid {entry.pw_uid}); "
                "a server must not run as root"
            )
        await asyncio.to_thread(ensure_runtime_dir, Path(self.runtime_root), entry)
        await asyncio.to_thread(self._copy_examples, entry)
        self.log.info(
            "starting server of hub user %s as OS user %s (uid %d)",
            self.user.name,
            self.os_username,
            entry.pw_uid,
        )
        return await super().start()

    def _copy_examples(self, entry: pwd.struct_passwd) -> None:
        if not self.example_notebooks:
            return
        source = Path(self.example_notebooks)
        target = Path(entry.pw_dir) / "examples"
        if not target.exists() and not target.is_symlink():
            target.mkdir(mode=0o700)
            os.chown(target, entry.pw_uid, entry.pw_gid)
        info = target.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != entry.pw_uid:
            # A link or someone else's folder: root must not write through it.
            self.log.warning(
                "not copying example notebooks: %s is not a folder of %s",
                target,
                entry.pw_name,
            )
            return
        for notebook in sorted(source.glob("*.ipynb")):
            copy = target / notebook.name
            if copy.exists() or copy.is_symlink():
                continue
            # Written by root into a folder the user owns: never follow a
            # link the user may have planted, and hand the file over.
            fd = os.open(
                copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
            )
            with os.fdopen(fd, "wb") as file:
                file.write(notebook.read_bytes())
            os.chown(copy, entry.pw_uid, entry.pw_gid)

    def make_preexec_fn(self, name: str) -> Any:
        """Switch to the OS user of this hub user, ignoring the hub name ``name``."""
        return set_user_setuid(self.os_username)

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        """Set USER, HOME and SHELL of the OS user and the enclave's socket paths."""
        entry = self._passwd()
        env["USER"] = entry.pw_name
        env["LOGNAME"] = entry.pw_name
        env["HOME"] = entry.pw_dir
        env["SHELL"] = entry.pw_shell
        env["JUPYTER_RUNTIME_DIR"] = str(Path(self.runtime_root) / str(entry.pw_uid))
        env["ENCLAVE_BROKER_SOCKET"] = self.broker_socket
        env["ENCLAVE_AUDIT_SOCKET"] = self.audit_socket
        env["ENCLAVE_RUN_DIR"] = self.run_dir
        env["ENCLAVE_USER_PREFIX"] = self.user_prefix
        return env

    def get_env(self) -> dict[str, str]:
        """Build the server's environment without the hub's private ENCLAVE_* values."""
        env = super().get_env()
        for key in list(env):
            if key.startswith("ENCLAVE_") and key not in USER_VISIBLE_ENCLAVE_VARS:
                self.log.warning(
                    "not passing %s to the server of %s", key, self.user.name
                )
                del env[key]
        return env
