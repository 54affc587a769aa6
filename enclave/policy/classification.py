"""Classification of assets: changes, and the yearly review."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave.catalog.models import Asset, Category, utcnow
from enclave.errors import NotFound, ValidationError
from enclave.policy.levels import check_level, rules_for

if TYPE_CHECKING:
    from enclave.audit.log import AuditLog

__all__ = ["REVIEW_INTERVAL", "check_category", "due_for_review", "reclassify"]

log = logging.getLogger(__name__)

REVIEW_INTERVAL = dt.timedelta(days=365)
"""Classification is reviewed at least once a year."""


def check_category(category: Category | str) -> Category:
    """Return ``category`` as a Category; raise ValidationError naming the choices."""
    try:
        return Category(category)
    except ValueError:
        choices = ", ".join(c.value for c in Category)
        raise ValidationError(
            f"invalid category {category!r}; use one of {choices}"
        ) from None


def reclassify(
    session: Session,
    audit: AuditLog,
    asset_id: str,
    *,
    level: int | None = None,
    category: Category | str | None = None,
    actor: str,
    reason: str,
    source: str = "cli",
) -> Asset:
    """Change or confirm the category and level of an asset.

    Either way the classification counts as reviewed today, and an
    ``asset.reclassify`` event records the old and new values and the reason
    in the same transaction.

    Parameters
    ----------
    session
        Open catalog session; on SQLite open it with ``immediate=True``.
    audit
        Audit trail of the change.
    asset_id
        Id of the asset.
    level, category
        New values; leave both out to confirm the current classification.
    actor
        User making the change.
    reason
        Why the classification changed or was confirmed.
    source
        Component making the change, recorded in the audit event.

    Raises
    ------
    NotFound
        If there is no asset ``asset_id``.
    ValidationError
        If a value is invalid, the reason is empty or the asset was destroyed.
    AuditUnavailable
        If the change cannot be audited; nothing changes.
    """
    if not reason or not reason.strip():
        raise ValidationError(
            "a reason is required to change or confirm a classification"
        )
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise NotFound(f"asset {asset_id!r} not found")
    if asset.destroyed_at is not None:
        raise ValidationError(
            f"asset {asset_id} was destroyed on {asset.destroyed_at:%Y-%m-%d}; "
            "it cannot be reclassified"
        )
    new_level = asset.level if level is None else check_level(level)
    new_category = asset.category if category is None else check_category(category)
    rules_for(session, new_level)

    old = {"category": asset.category.value, "level": asset.level}
    asset.level = new_level
    asset.category = new_category
    asset.classified_at = utcnow()
    new = {"category": new_category.value, "level": new_level}

    audit.append(
        actor=actor,
        action="asset.reclassify",
        outcome="success",
        source=source,
        target=asset.id,
        detail={"old": old, "new": new, "reason": reason.strip()},
        session=session,
    )
    log.info("asset %s classified as %s by %s", asset.id, new, actor)
    return asset


def due_for_review(session: Session, today: dt.date | None = None) -> list[Asset]:
    """Return the assets, not destroyed, whose classification is a year old or more.

    An asset classified on day D is due from day D + 365 on.
    """
    today = today or dt.date.today()
    cutoff = dt.datetime.combine(
        today - REVIEW_INTERVAL + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC
    )
    query = (
        select(Asset)
        .where(Asset.destroyed_at.is_(None), Asset.classified_at < cutoff)
        .order_by(Asset.classified_at, Asset.id)
    )
    return list(session.scalars(query))
