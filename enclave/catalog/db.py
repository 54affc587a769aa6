"""Engines, sessions and schema upgrades of the catalog database.

The catalog runs on SQLite (the default, one file in the data folder),
PostgreSQL (driver psycopg 3) or MariaDB (driver PyMySQL). Plain
``postgresql://`` and ``mysql://`` URLs are mapped to those drivers.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from enclave.errors import ConfigurationError

__all__ = [
    "Catalog",
    "database_errors",
    "give_wal_files_to_owner",
    "make_engine",
    "normalize_url",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

SQLITE_BUSY_TIMEOUT_S = 30
"""How long an SQLite writer waits for another writer's lock before failing."""

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mariadb+pymysql": "mysql+pymysql",
}
_SUPPORTED = ("sqlite", "postgresql+psycopg", "mysql+pymysql")


def normalize_url(url: str | URL) -> URL:
    """Return ``url`` with the driver the catalog uses for its database.

    Raises
    ------
    ConfigurationError
        If the URL cannot be parsed or names a database other than SQLite,
        PostgreSQL or MariaDB.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(
            "invalid catalog URL; expected e.g. sqlite:////var/lib/enclave/"
            "catalog.sqlite or postgresql://user@host/db"
        ) from exc

    drivername = _DRIVERS.get(parsed.drivername, parsed.drivername)
    if drivername.startswith("sqlite"):
        drivername = "sqlite"
    if drivername not in _SUPPORTED:
        raise ConfigurationError(
            f"unsupported catalog database driver {parsed.drivername!r}; use one of "
            "sqlite://, postgresql:// (psycopg) or mysql:// (PyMySQL, for MariaDB)"
        )
    parsed = parsed.set(drivername=drivername)
    if drivername == "mysql+pymysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for the catalog with the settings each database needs.

    SQLite gets foreign keys, write-ahead logging and a busy timeout, and
    begins transactions itself so that ``BEGIN IMMEDIATE`` can be requested
    with the execution option ``sqlite_begin="IMMEDIATE"``. MariaDB runs at
    READ COMMITTED, like PostgreSQL by default, so that a row read after a
    lock is taken is the newest committed row.

    Parameters
    ----------
    url
        SQLAlchemy URL; plain ``postgresql://`` and ``mysql://`` are accepted.
    **kwargs
        Passed on to :func:`sqlalchemy.create_engine`.
    """
    parsed = normalize_url(url)
    if parsed.drivername == "sqlite":
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        in_memory = parsed.database in (None, "", ":memory:")
        _configure_sqlite(engine, database=None if in_memory else parsed.database)
        return engine

    kwargs.setdefault("pool_pre_ping", True)
    if parsed.drivername == "mysql+pymysql":
        kwargs.setdefault("isolation_level", "READ COMMITTED")
    return create_engine(parsed, **kwargs)


def _configure_sqlite(engine: Engine, *, database: str | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN, rather than the
        # sqlite3 module, which delays it until the first write.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        if database is not None:
            give_wal_files_to_owner(database)
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"invalid sqlite_begin {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")


def give_wal_files_to_owner(database: str | os.PathLike[str]) -> list[Path]:
    """Give root's ``-wal`` and ``-shm`` files of an SQLite database to its owner.

    The hub runs as root and writes to a catalog file that the broker's OS
    user owns. SQLite (checked with 3.40.1) gives the ``-wal`` and ``-shm``
    files it creates as root to the database file's owner. A file that root
    created while root owned the database, and that outlived a ``chown`` of
    the database, stays root's, and the owner's next connection then fails.
    This changes the owner of such files. It does nothing unless the process
    runs as root and the database belongs to another user, and it leaves
    alone a file that is not a regular file, has more than one hard link or
    belongs to a third user.

    Returns
    -------
    list of Path
        The files whose owner was changed.
    """
    if os.geteuid() != 0:
        return []
    path = Path(database)
    try:
        owner = path.stat()
    except FileNotFoundError:
        return []
    if owner.st_uid == 0:
        return []

    changed = []
    for suffix in ("-wal", "-shm"):
        side_file = path.with_name(path.name + suffix)
        try:
            fd = os.open(side_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("failed to open %s to check its owner: %s", side_file, exc)
            continue
        try:
            found = os.fstat(fd)
            # A hard link could point at any file of root's, so only a
            # regular file with one link is given away.
            if (
                found.st_uid != 0
                or not stat.S_ISREG(found.st_mode)
                or found.st_nlink != 1
            ):
                continue
            os.fchown(fd, owner.st_uid, owner.st_gid)
        finally:
            os.close(fd)
        log.warning(
            "gave %s, left by root, to uid %d, the owner of %s",
            side_file,
            owner.st_uid,
            path,
        )
        changed.append(side_file)
    return changed


class Catalog:
    """The catalog database: an engine, a session factory and schema upgrades.

    Parameters
    ----------
    url
        SQLAlchemy URL of the database, e.g. ``settings.db_url``.

    Examples
    --------
    >>> from enclave.catalog.models import LevelRule
    >>> catalog = Catalog("sqlite://")
    >>> catalog.upgrade()
    >>> with catalog.session() as session:
    ...     session.get(LevelRule, 3).backup_interval_minutes
    60
    """

    def __init__(self, url: str | URL) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Catalog({self.url.render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        """Name of the database dialect: ``sqlite``, ``postgresql`` or ``mysql``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """Open a session that commits on success and rolls back on an error.

        Parameters
        ----------
        immediate
            On SQLite, take the write lock when the transaction begins. Use it
            for transactions that read and then write, such as a state change
            recorded in the audit trail in the same transaction, so that a
            concurrent writer makes this one wait instead of fail. Other
            databases lock rows as they are written and ignore it.
        """
        options = {"sqlite_begin": "IMMEDIATE"} if immediate else {}
        session = self._sessions(execution_options=options)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def upgrade(self) -> None:
        """Bring the schema to the newest revision and seed missing defaults.

        Seeds the five default level rules and the audit chain's head row
        where they are absent; rules edited by the institution are kept.
        """
        from alembic import command

        from enclave.audit.log import ensure_audit_head
        from enclave.policy import seed_level_rules

        with self.engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        with self.session(immediate=True) as session:
            seeded = seed_level_rules(session)
            ensure_audit_head(session)
        if seeded:
            log.info("seeded default rules of levels %s", seeded)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def alembic_config() -> Any:
    """Return an Alembic configuration whose scripts live inside the package."""
    from alembic.config import Config

    config = Config()
    # Percent signs would be read as interpolation by ConfigParser.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


@contextmanager
def database_errors(url: str | URL) -> Iterator[None]:
    """Turn a missing table or an unreachable server into a ConfigurationError.

    For command-line tools: the message names the database (without its
    password) and the usual fix. Other database errors pass unchanged.
    """
    try:
        yield
    except (OperationalError, ProgrammingError) as exc:
        shown = normalize_url(url).render_as_string(hide_password=True)
        cause = (
            str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        )
        raise ConfigurationError(
            f"the catalog database {shown} cannot be used ({cause}); check "
            "ENCLAVE_DB_URL, that the server is running, and run 'enclave init'"
        ) from exc
