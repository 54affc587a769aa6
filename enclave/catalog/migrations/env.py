"""Alembic environment of the catalog.

``Catalog.upgrade()`` passes an open connection in
``config.attributes["connection"]``. Without one, the URL comes from the
``sqlalchemy.url`` option or the ``ENCLAVE_DB_URL`` variable.

To add a revision after changing the models, generate it against a database
at the current head and then edit it by hand::

    from alembic import command
    from enclave.catalog.db import Catalog, alembic_config

    catalog = Catalog("sqlite:////tmp/head.sqlite")
    catalog.upgrade()
    config = alembic_config()
    with catalog.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message="Add ...", autogenerate=True, rev_id="0003")

``tests/catalog/test_migrations.py`` checks on SQLite, PostgreSQL and
MariaDB that the revisions create exactly the tables of the models.
"""

from __future__ import annotations

from alembic import context

from enclave.catalog.db import make_engine
from enclave.catalog.models import Base, UTCDateTime
from enclave.config import load_settings

target_metadata = Base.metadata


def _render_item(type_, obj, autogen_context):  # type: ignore[no-untyped-def]
    # Revisions must not import the models, which change after the revision
    # is written, so render the UTC time stamp type with plain SQLAlchemy types.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("from sqlalchemy.dialects import mysql")
        return 'sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")'
    return False


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_item=_render_item,
        # SQLite alters a table by copying it; later revisions need this.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return

    url = context.config.get_main_option("sqlalchemy.url") or load_settings().db_url
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _configure(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them online")
run_migrations_online()
