"""Catalog engines, sessions, URLs and the models' round trips on every database."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy.exc
import sqlalchemy.orm.exc
from sqlalchemy import select, text

from enclave.catalog.db import Catalog, database_errors, normalize_url
from enclave.catalog.models import (
    Asset,
    AssetKind,
    Category,
    DataKey,
    Dataset,
    DatasetItem,
    LevelRule,
    MediaType,
    Project,
    ProjectStatus,
)
from enclave.errors import ConfigurationError


def _asset(**changes) -> Asset:  # type: ignore[no-untyped-def]
    values = dict(
        kind=AssetKind.SOURCE,
        media_type=MediaType.VIDEO,
        category=Category.DIAGNOSIS,
        level=4,
        original_name="endoscopy 😷 检查.mp4",
        container="mp4",
        video_codec="h264",
        width=176,
        height=144,
        fps=29.97,
        duration_s=12.5,
        frame_count=375,
        probe={"streams": [{"codec": "h264", "tags": {"rotate": "0"}}]},
        blob_id="b" * 32,
        plaintext_size=123456,
        plaintext_sha256="c" * 64,
        chunk_size=65536,
        created_by="steward",
    )
    values.update(changes)
    return Asset(**values)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mysql://root@h/db", "mysql+pymysql://root@h/db?charset=utf8mb4"),
        ("mariadb://root@h/db", "mysql+pymysql://root@h/db?charset=utf8mb4"),
        ("mysql+pymysql://r@h/db?charset=utf8", "mysql+pymysql://r@h/db?charset=utf8"),
        ("sqlite:////var/lib/enclave/c.sqlite", "sqlite:////var/lib/enclave/c.sqlite"),
        ("sqlite+pysqlite:///c.sqlite", "sqlite:///c.sqlite"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize("url", ["oracle://u@h/db", "postgresql+asyncpg://u@h/db"])
def test_normalize_url_rejects_other_drivers(url: str) -> None:
    with pytest.raises(ConfigurationError, match="unsupported catalog database driver"):
        normalize_url(url)


def test_normalize_url_rejects_garbage() -> None:
    with pytest.raises(ConfigurationError, match="invalid catalog URL"):
        normalize_url("not a url")


def test_sqlite_pragmas(tmp_path) -> None:  # type: ignore[no-untyped-def]
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")

    with catalog.engine.connect() as connection:
        foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
        journal_mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        busy_timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    catalog.dispose()

    assert foreign_keys == 1
    assert journal_mode == "wal"
    assert busy_timeout == 30000


def test_in_memory_sqlite_upgrades() -> None:
    catalog = Catalog("sqlite://")
    catalog.upgrade()

    with catalog.session() as session:
        assert session.get(LevelRule, 1) is not None


def test_repr_hides_password() -> None:
    catalog = Catalog("postgresql://enclave:s3cret@127.0.0.1/enclave")

    assert "s3cret" not in repr(catalog)


def test_asset_round_trip(any_catalog: Catalog) -> None:
    created = dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=dt.UTC)
    with any_catalog.session() as session:
        asset = _asset(created_at=created)
        asset.data_key = DataKey(master_key_id="m1", wrapped_key=bytes(range(256)) * 2)
        session.add(asset)
        session.flush()
        asset_id = asset.id

    with any_catalog.session() as session:
        stored = session.get(Asset, asset_id)
        assert stored.original_name == "endoscopy 😷 检查.mp4"
        assert stored.category is Category.DIAGNOSIS
        assert stored.kind is AssetKind.SOURCE
        assert stored.probe == {"streams": [{"codec": "h264", "tags": {"rotate": "0"}}]}
        assert stored.fps == pytest.approx(29.97)
        assert stored.created_at == created
        assert stored.classified_at.tzinfo is dt.UTC
        assert stored.data_key.wrapped_key == bytes(range(256)) * 2
        assert stored.variable_frame_rate is False


def test_dataset_items_ordered_by_path(any_catalog: Catalog) -> None:
    with any_catalog.session() as session:
        assets = [
            _asset(blob_id=f"{i:032x}", kind=AssetKind.DERIVATIVE) for i in range(3)
        ]
        dataset = Dataset(
            name="carphone",
            category=Category.DIAGNOSIS,
            level=3,
            profile="baseline",
            created_by="steward",
        )
        for path, asset in zip(
            ["clips/0002", "clips/0003", "clips/0001"], assets, strict=True
        ):
            session.add(DatasetItem(dataset=dataset, asset=asset, path=path))
        session.add(dataset)

    with any_catalog.session() as session:
        stored = session.scalars(select(Dataset)).one()
        assert [item.path for item in stored.items] == [
            "clips/0001",
            "clips/0002",
            "clips/0003",
        ]


def test_unknown_level_violates_foreign_key(any_catalog: Catalog) -> None:
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        with any_catalog.session() as session:
            session.add(_asset(level=9))

    with any_catalog.session() as session:
        assert session.scalars(select(Asset)).all() == []


def test_duplicate_blob_id_rejected(any_catalog: Catalog) -> None:
    with any_catalog.session() as session:
        session.add(_asset())

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        with any_catalog.session() as session:
            session.add(_asset())

    with any_catalog.session() as session:
        assert len(session.scalars(select(Asset)).all()) == 1


def test_duplicate_item_path_rejected(any_catalog: Catalog) -> None:
    with any_catalog.session() as session:
        dataset = Dataset(
            name="d", category=Category.NURSING, level=2, profile="p", created_by="s"
        )
        session.add(DatasetItem(dataset=dataset, asset=_asset(), path="clips/0001"))

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        with any_catalog.session() as session:
            dataset = session.scalars(select(Dataset)).one()
            asset = _asset(blob_id="e" * 32)
            session.add(DatasetItem(dataset=dataset, asset=asset, path="clips/0001"))


def test_naive_datetime_rejected(any_catalog: Catalog) -> None:
    with pytest.raises(sqlalchemy.exc.StatementError, match="naive datetime"):
        with any_catalog.session() as session:
            session.add(_asset(created_at=dt.datetime(2026, 1, 1)))


def test_session_rolls_back_on_error(any_catalog: Catalog) -> None:
    with pytest.raises(RuntimeError):
        with any_catalog.session() as session:
            session.add(_asset())
            session.flush()
            raise RuntimeError("stop")

    with any_catalog.session() as session:
        assert session.scalars(select(Asset)).all() == []


def test_project_version_detects_concurrent_change(any_catalog: Catalog) -> None:
    with any_catalog.session() as session:
        session.add(
            Project(
                name="p1",
                title="t",
                purpose="p",
                principal_investigator="alice",
                starts_on=dt.date(2027, 1, 1),
                ends_on=dt.date(2027, 2, 1),
                created_by="steward",
            )
        )

    first = any_catalog._sessions()
    second = any_catalog._sessions()
    try:
        mine = first.scalars(select(Project)).one()
        theirs = second.scalars(select(Project)).one()
        mine.status = ProjectStatus.APPROVED
        first.commit()
        theirs.status = ProjectStatus.REJECTED
        # SQLite refuses the second writer's stale transaction outright;
        # the others find that the row version moved on.
        with pytest.raises(
            (sqlalchemy.orm.exc.StaleDataError, sqlalchemy.exc.OperationalError)
        ):
            second.commit()
    finally:
        first.close()
        second.rollback()
        second.close()

    with any_catalog.session() as session:
        assert session.scalars(select(Project)).one().status == ProjectStatus.APPROVED


def test_enum_stored_as_value(any_catalog: Catalog) -> None:
    with any_catalog.session() as session:
        session.add(_asset(category=Category.MONITORING))

    with any_catalog.engine.connect() as connection:
        stored = connection.execute(text("SELECT category FROM assets")).scalar()
    assert stored == "monitoring"


def test_database_errors_names_fix() -> None:
    catalog = Catalog("postgresql://postgres:pw@127.0.0.1:1/enclave")

    with pytest.raises(ConfigurationError, match="run 'enclave init'") as caught:
        with database_errors(catalog.url):
            with catalog.session() as session:
                session.execute(text("SELECT 1"))

    assert "pw" not in str(caught.value)
    assert "127.0.0.1:1/enclave" in str(caught.value)
