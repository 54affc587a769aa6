"""An SQLite catalog written by root keeps its -wal and -shm files usable by its owner.

The hub runs as root and writes hub logins into a catalog file that the
broker's OS user owns. These tests use the OS user ``nobody`` as the owner and
need root, like the hub tests.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.catalog.db import Catalog, give_wal_files_to_owner
from enclave.catalog.models import HubLogin, utcnow

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

OWNER = "nobody"

# A script that runs as the owner with the system Python, which the owner can
# execute. It writes as well as reads, because the broker appends audit events.
USE_AS_OWNER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], timeout=2)
try:
    count = connection.execute("SELECT count(*) FROM level_rules").fetchone()[0]
    connection.execute("UPDATE level_rules SET level = level")
    connection.commit()
    print(count)
finally:
    connection.close()
"""


@pytest.fixture
def owner_folder() -> Iterator[Path]:
    """A folder that belongs to the owner, as the broker's data folder does."""
    base = Path(tempfile.mkdtemp(prefix="enclave-wal-test-"))
    base.chmod(0o711)
    folder = base / "data"
    folder.mkdir(mode=0o700)
    entry = pwd.getpwnam(OWNER)
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    yield folder
    shutil.rmtree(base, ignore_errors=True)


def _give_to_owner(path: Path) -> pwd.struct_passwd:
    entry = pwd.getpwnam(OWNER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return entry


def _use_as_owner(database: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/usr/bin/python3", "-c", USE_AS_OWNER, str(database)],
        user=OWNER,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _new_catalog(database: Path) -> None:
    catalog = Catalog(f"sqlite:///{database}")
    catalog.upgrade()
    catalog.dispose()


def test_root_write_leaves_wal_to_owner(owner_folder: Path) -> None:
    database = owner_folder / "catalog.sqlite"
    _new_catalog(database)
    entry = _give_to_owner(database)

    catalog = Catalog(f"sqlite:///{database}")
    try:
        with catalog.session(immediate=True) as session:
            session.add(
                HubLogin(
                    username="alice",
                    logged_in_at=utcnow(),
                    expires_at=utcnow(),
                    amr=["pwd"],
                    groups=[],
                )
            )
        # The pool keeps root's connection open, so the files still exist.
        for suffix in ("-wal", "-shm"):
            found = Path(f"{database}{suffix}").stat()
            assert found.st_uid == entry.pw_uid, suffix
            assert found.st_gid == entry.pw_gid, suffix
        used = _use_as_owner(database)
    finally:
        catalog.dispose()

    assert used.returncode == 0, used.stderr
    assert int(used.stdout) == 5


def test_stale_root_wal_given_to_owner(owner_folder: Path) -> None:
    database = owner_folder / "catalog.sqlite"
    _new_catalog(database)
    # Root opens the catalog while it still owns it, so SQLite creates the
    # -wal and -shm files as root's. Then the catalog is given to its owner.
    root_connection = sqlite3.connect(database)
    try:
        root_connection.execute("PRAGMA journal_mode = WAL")
        root_connection.execute("UPDATE level_rules SET level = level")
        root_connection.commit()
        entry = _give_to_owner(database)
        assert Path(f"{database}-shm").stat().st_uid == 0
        before = _use_as_owner(database)

        catalog = Catalog(f"sqlite:///{database}")
        try:
            with catalog.session() as session:
                session.get(HubLogin, "alice")
        finally:
            catalog.dispose()
        after = _use_as_owner(database)
    finally:
        root_connection.close()

    assert before.returncode != 0, before.stdout
    assert after.returncode == 0, after.stderr
    assert int(after.stdout) == 5
    for suffix in ("-wal", "-shm"):
        path = Path(f"{database}{suffix}")
        if path.exists():
            assert path.stat().st_uid == entry.pw_uid, suffix


def test_linked_wal_file_left_alone(owner_folder: Path) -> None:
    # A hard link could point the -wal name at any file of root's.
    database = owner_folder / "catalog.sqlite"
    _new_catalog(database)
    _give_to_owner(database)
    target = owner_folder / "root-file"
    target.write_text("root's file")
    os.link(target, f"{database}-wal")

    changed = give_wal_files_to_owner(database)

    assert changed == []
    assert target.stat().st_uid == 0
