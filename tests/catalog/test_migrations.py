"""The Alembic migrations create exactly the tables of the models."""

from __future__ import annotations

from importlib import resources

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, inspect

from enclave.catalog.db import Catalog
from enclave.catalog.models import Base


def test_migrations_match_models(db_url: str) -> None:
    catalog = Catalog(db_url)
    catalog.upgrade()

    with catalog.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "target_metadata": Base.metadata}
        )
        diff = compare_metadata(context, Base.metadata)
    catalog.dispose()

    assert diff == []


def test_upgrade_creates_every_table(db_url: str) -> None:
    catalog = Catalog(db_url)
    catalog.upgrade()

    tables = set(inspect(catalog.engine).get_table_names())
    catalog.dispose()

    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_upgrade_twice_is_harmless(db_url: str) -> None:
    catalog = Catalog(db_url)
    catalog.upgrade()
    catalog.upgrade()
    catalog.dispose()


def test_comparison_sees_a_difference(db_url: str) -> None:
    catalog = Catalog(db_url)
    catalog.upgrade()
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    Table("extra", changed, Column("id", Integer, primary_key=True))

    with catalog.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, changed)
    catalog.dispose()

    assert [entry[0] for entry in diff] == ["add_table"]


def test_migrations_are_package_data() -> None:
    # Packages are what setuptools puts in a wheel, so an installed enclave
    # finds its migration scripts next to its code.
    scripts = resources.files("enclave.catalog.migrations")

    assert scripts.joinpath("env.py").is_file()
    assert scripts.joinpath("script.py.mako").is_file()
    assert scripts.joinpath("versions", "0001_initial.py").is_file()
    assert resources.files("enclave.catalog.migrations.versions").is_dir()
