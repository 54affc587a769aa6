"""The database fixtures name the server to start when one is down."""

from __future__ import annotations

import pytest

from tests.fixtures import catalog as fixtures


def test_postgres_down_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixtures, "POSTGRES_PORT", 1)

    with pytest.raises(pytest.fail.Exception, match="start the PostgreSQL server"):
        fixtures._postgres_admin()


def test_mariadb_down_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixtures, "MARIADB_PORT", 1)

    with pytest.raises(pytest.fail.Exception, match="start the MariaDB server"):
        fixtures._mariadb_admin()
