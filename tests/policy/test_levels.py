"""Level rules: defaults, seeding, edits with audit, and the standard's floors."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Category, LevelRule
from enclave.errors import NotFound, ValidationError
from enclave.policy import categories, default_rules, rules_for, set_rule


def test_defaults_cover_five_levels() -> None:
    rules = default_rules()

    assert sorted(rules) == [1, 2, 3, 4, 5]
    assert rules[1].deid_required is False
    assert rules[1].who_may_access == "anyone"
    assert [rules[n].backup_interval_minutes for n in (3, 4, 5)] == [60, 60, 60]
    assert [rules[n].requires_mfa for n in (1, 2, 3, 4, 5)] == [
        False,
        False,
        False,
        True,
        True,
    ]
    assert [rules[n].min_approvals for n in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 2]
    assert 15 * 365 <= rules[5].retention_days <= 30 * 366


def test_four_categories_described() -> None:
    described = categories()

    assert set(described) == set(Category)
    assert "endoscopy" in described[Category.DIAGNOSIS].description
    assert "public-area cameras" in described[Category.MONITORING].description


def test_upgrade_seeds_rules(any_catalog: Catalog) -> None:
    with any_catalog.session() as session:
        rule = rules_for(session, 4)

        assert rule.requires_mfa is True
        assert rule.backup_interval_minutes == 60
        assert rule.updated_by == "system"
        assert "designated staff" in rule.who_may_access


def test_upgrade_keeps_edited_rules(any_catalog: Catalog) -> None:
    with any_catalog.engine.begin() as connection:
        connection.execute(
            update(LevelRule)
            .where(LevelRule.level == 3)
            .values(backup_interval_minutes=30)
        )

    any_catalog.upgrade()

    with any_catalog.session() as session:
        assert rules_for(session, 3).backup_interval_minutes == 30


@pytest.mark.parametrize("level", [0, 6, "3", True])
def test_rules_for_rejects_invalid_level(catalog: Catalog, level: object) -> None:
    with catalog.session() as session:
        with pytest.raises(ValidationError, match="invalid level"):
            rules_for(session, level)  # type: ignore[arg-type]


def test_rules_for_without_seed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    catalog.upgrade()
    with catalog.engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM level_rules WHERE level = 2")

    with catalog.session() as session:
        with pytest.raises(NotFound, match="run 'enclave init'"):
            rules_for(session, 2)


def test_set_rule_records_old_and_new(
    any_catalog: Catalog, any_audit_log: AuditLog
) -> None:
    with any_catalog.session(immediate=True) as session:
        set_rule(
            session,
            3,
            "security-admin",
            audit=any_audit_log,
            backup_interval_minutes=30,
            min_approvals=3,
            requires_mfa=False,
        )

    with any_catalog.session() as session:
        rule = rules_for(session, 3)
        assert rule.backup_interval_minutes == 30
        assert rule.min_approvals == 3
        assert rule.updated_by == "security-admin"
    (event,) = any_audit_log.events(action="level.update")
    assert event.actor == "security-admin"
    assert event.target == "level:3"
    assert event.detail == {
        "old": {"backup_interval_minutes": 60, "min_approvals": 2},
        "new": {"backup_interval_minutes": 30, "min_approvals": 3},
    }
    assert any_audit_log.verify().ok


def test_set_rule_without_change_records_nothing(
    catalog: Catalog, audit_log: AuditLog
) -> None:
    with catalog.session(immediate=True) as session:
        set_rule(session, 3, "admin", audit=audit_log, backup_interval_minutes=60)

    assert audit_log.events() == []


@pytest.mark.parametrize(
    ("level", "changes", "message"),
    [
        (3, {"backup_interval_minutes": 120}, "backed up at least every hour"),
        (4, {"backup_interval_minutes": None}, "backed up at least every hour"),
        (4, {"requires_mfa": False}, "level 4 requires multi-factor login"),
        (5, {"retention_days": 365}, "kept 15 to 30 years"),
        (5, {"retention_days": 40 * 365}, "kept 15 to 30 years"),
        (3, {"deid_required": False}, "must be de-identified"),
        (2, {"min_approvals": 0}, "invalid min_approvals 0"),
        (1, {"retention_days": -1}, "invalid retention_days -1"),
        (1, {"requires_mfa": "yes"}, "invalid requires_mfa 'yes'"),
        (1, {"colour": "red"}, "unknown level rule fields \\['colour'\\]"),
    ],
)
def test_set_rule_rejects_breaking_values(
    catalog: Catalog, audit_log: AuditLog, level: int, changes: dict, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        with catalog.session(immediate=True) as session:
            set_rule(session, level, "admin", audit=audit_log, **changes)

    with catalog.session() as session:
        assert rules_for(session, level).updated_by == "system"
    assert audit_log.events() == []


def test_set_rule_may_tighten(catalog: Catalog, audit_log: AuditLog) -> None:
    with catalog.session(immediate=True) as session:
        set_rule(session, 1, "admin", audit=audit_log, requires_mfa=True)
        set_rule(session, 5, "admin", audit=audit_log, retention_days=5479)

    with catalog.session() as session:
        assert rules_for(session, 1).requires_mfa is True
        assert rules_for(session, 5).retention_days == 5479
