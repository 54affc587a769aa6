"""The handling rules of the five levels: defaults, validation and edits."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave.catalog.models import Category, LevelRule, utcnow
from enclave.errors import ConfigurationError, NotFound, ValidationError

if TYPE_CHECKING:
    from enclave.audit.log import AuditLog

__all__ = [
    "EDITABLE_FIELDS",
    "LEVELS",
    "RETENTION_DAYS_LEVEL_5",
    "CategoryInfo",
    "RuleDefaults",
    "categories",
    "check_level",
    "check_rule",
    "default_rules",
    "rules_for",
    "seed_level_rules",
    "set_rule",
]

log = logging.getLogger(__name__)

LEVELS = (1, 2, 3, 4, 5)

RETENTION_DAYS_LEVEL_5 = (5479, 10957)
"""Level 5 is kept 15 to 30 years: the range in days (years of 365.25 days)."""

HOURLY_BACKUP_LEVELS = (3, 4, 5)
MFA_LEVELS = (4, 5)
DEID_LEVELS = (3, 4, 5)


@dataclass(frozen=True)
class RuleDefaults:
    """The default rules of one level, as read from ``levels.toml``."""

    level: int
    name: str
    description: str
    who_may_access: str
    deid_required: bool
    min_approvals: int
    requires_mfa: bool
    backup_interval_minutes: int | None = None
    retention_days: int | None = None


@dataclass(frozen=True)
class CategoryInfo:
    """Name and description of one category of video."""

    category: Category
    name: str
    description: str


EDITABLE_FIELDS = tuple(f.name for f in fields(RuleDefaults) if f.name != "level")
"""Fields of a level rule that :func:`set_rule` may change."""


@cache
def _policy_file() -> dict[str, Any]:
    text = resources.files("enclave.policy").joinpath("levels.toml").read_text("utf-8")
    return tomllib.loads(text)


@cache
def default_rules() -> dict[int, RuleDefaults]:
    """Return the default rules of the five levels from ``levels.toml``.

    Raises
    ------
    ConfigurationError
        If the file lacks a level, has an unknown field or breaks the
        standard's rules (see :func:`check_rule`).
    """
    rules: dict[int, RuleDefaults] = {}
    for entry in _policy_file().get("level", []):
        try:
            rule = RuleDefaults(**entry)
        except TypeError as exc:
            raise ConfigurationError(
                f"invalid level entry in levels.toml: {exc}"
            ) from exc
        try:
            check_rule(rule.level, vars(rule))
        except ValidationError as exc:
            raise ConfigurationError(f"levels.toml: {exc}") from exc
        rules[rule.level] = rule
    missing = [level for level in LEVELS if level not in rules]
    if missing:
        raise ConfigurationError(f"levels.toml has no rules for levels {missing}")
    return rules


@cache
def categories() -> dict[Category, CategoryInfo]:
    """Return the four categories with their names and descriptions."""
    table = _policy_file().get("categories", {})
    found = {}
    for category in Category:
        entry = table.get(category.value)
        if entry is None:
            raise ConfigurationError(
                f"levels.toml does not describe {category.value!r}"
            )
        found[category] = CategoryInfo(category, entry["name"], entry["description"])
    return found


def check_level(level: Any) -> int:
    """Return ``level`` as an int, or raise ValidationError unless it is 1 to 5."""
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise ValidationError(f"invalid level {level!r}; use 1, 2, 3, 4 or 5")
    return level


def check_rule(level: int, values: dict[str, Any]) -> None:
    """Raise ValidationError if the rule values of ``level`` break the standard.

    The standard fixes these floors, which an institution may tighten but
    not relax. Levels 3 to 5 are backed up at least every hour and must be
    de-identified before release. Levels 4 and 5 require multi-factor login.
    Level 5 is kept 15 to 30 years.
    """
    check_level(level)
    for name in ("backup_interval_minutes", "retention_days", "min_approvals"):
        value = values.get(name)
        if value is None and name != "min_approvals":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationError(
                f"invalid {name} {value!r} for level {level}; use a whole number of "
                "at least 1"
            )
    for name in ("deid_required", "requires_mfa"):
        if not isinstance(values.get(name), bool):
            raise ValidationError(
                f"invalid {name} {values.get(name)!r} for level {level}; use yes or no"
            )

    backup = values.get("backup_interval_minutes")
    if level in HOURLY_BACKUP_LEVELS and (backup is None or backup > 60):
        raise ValidationError(
            f"level {level} video is backed up at least every hour; "
            f"backup_interval_minutes {backup!r} must be 60 or less"
        )
    if level in MFA_LEVELS and not values["requires_mfa"]:
        raise ValidationError(f"level {level} requires multi-factor login")
    if level in DEID_LEVELS and not values["deid_required"]:
        raise ValidationError(
            f"level {level} video must be de-identified before release"
        )
    low, high = RETENTION_DAYS_LEVEL_5
    retention = values.get("retention_days")
    if level == 5 and (retention is None or not low <= retention <= high):
        raise ValidationError(
            f"level 5 video is kept 15 to 30 years; retention_days {retention!r} "
            f"must be between {low} and {high}"
        )


def seed_level_rules(session: Session) -> list[int]:
    """Insert the default rules of each level that has none; return those levels.

    Rules that are already in the catalog are left as the institution set them.
    """
    present = set(session.scalars(select(LevelRule.level)))
    seeded = []
    for level, rule in sorted(default_rules().items()):
        if level in present:
            continue
        session.add(LevelRule(**vars(rule), updated_by="system"))
        seeded.append(level)
    session.flush()
    return seeded


def rules_for(session: Session, level: int) -> LevelRule:
    """Return the handling rules of ``level``.

    Raises
    ------
    ValidationError
        If ``level`` is not 1 to 5.
    NotFound
        If the catalog has no rules yet (run ``enclave init``).
    """
    rule = session.get(LevelRule, check_level(level))
    if rule is None:
        raise NotFound(f"no rules for level {level}; run 'enclave init' to seed them")
    return rule


def set_rule(
    session: Session,
    level: int,
    actor: str,
    *,
    audit: AuditLog,
    source: str = "cli",
    **changes: Any,
) -> LevelRule:
    """Change the rules of ``level`` and record a ``level.update`` audit event.

    Parameters
    ----------
    session
        Open catalog session; on SQLite open it with ``immediate=True``.
    level
        Level 1 to 5.
    actor
        User making the change.
    audit
        Audit trail that records the old and new values.
    source
        Component making the change, recorded in the audit event.
    **changes
        New values of fields in :data:`EDITABLE_FIELDS`.

    Raises
    ------
    ValidationError
        If a field is unknown or a value breaks the standard; nothing changes.
    AuditUnavailable
        If the change cannot be audited; nothing changes.
    """
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValidationError(
            f"unknown level rule fields {unknown}; editable fields are "
            f"{', '.join(EDITABLE_FIELDS)}"
        )
    rule = rules_for(session, level)
    current = {name: getattr(rule, name) for name in EDITABLE_FIELDS}
    check_rule(level, {**current, **changes})

    old = {k: current[k] for k, v in changes.items() if current[k] != v}
    new = {k: changes[k] for k in old}
    if not new:
        return rule
    for name, value in new.items():
        setattr(rule, name, value)
    rule.updated_at = utcnow()
    rule.updated_by = actor

    audit.append(
        actor=actor,
        action="level.update",
        outcome="success",
        source=source,
        target=f"level:{level}",
        detail={"old": old, "new": new},
        session=session,
    )
    log.info("level %d rules changed by %s: %s", level, actor, sorted(new))
    return rule
