"""Working copies: assets a project makes for its own work, destroyed when it ends.

A working copy is an ordinary encrypted asset in the vault that a
:class:`~enclave.ethics.models.WorkingCopy` row ties to one project. It is
destroyed by deleting its data key (crypto-shredding): the ciphertext stays
on disk but can no longer be decrypted by anyone, the broker included.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave.catalog.models import Asset, DataKey, Project, utcnow
from enclave.errors import NotFound, ValidationError
from enclave.ethics.models import WorkingCopy

if TYPE_CHECKING:
    from enclave.audit import AuditLog

__all__ = ["DESTRUCTION_METHOD", "destroy_working_copies", "record_working_copy"]

log = logging.getLogger(__name__)

DESTRUCTION_METHOD = "key destruction"


def record_working_copy(
    session: Session,
    *,
    asset_id: str,
    project: Project,
    created_by: str,
    description: str = "",
) -> WorkingCopy:
    """Mark the asset ``asset_id`` as a working copy of ``project``.

    Raises
    ------
    NotFound
        If there is no such asset.
    ValidationError
        If the asset is already destroyed or belongs to another project.
    """
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise NotFound(f"asset {asset_id!r} not found")
    if asset.destroyed_at is not None:
        raise ValidationError(f"asset {asset_id!r} is destroyed; record a live asset")
    existing = session.get(WorkingCopy, asset_id)
    if existing is not None and existing.project_id != project.id:
        raise ValidationError(
            f"asset {asset_id!r} is already a working copy of another project; a "
            "working copy belongs to one project"
        )
    if existing is not None:
        return existing

    copy = WorkingCopy(
        asset_id=asset_id,
        project_id=project.id,
        created_by=created_by,
        description=description,
    )
    session.add(copy)
    session.flush()
    return copy


def destroy_working_copies(
    session: Session, audit: AuditLog, project: Project, *, actor: str, reason: str
) -> list[str]:
    """Destroy every live working copy of ``project`` by deleting its data key.

    Each destruction is recorded as an ``asset.destroy`` audit event with
    what was destroyed, when, by whom and the method ``key destruction``, in
    the session's transaction.

    Returns
    -------
    list of str
        Ids of the destroyed assets.
    """
    copies = list(
        session.scalars(
            select(WorkingCopy)
            .where(
                WorkingCopy.project_id == project.id, WorkingCopy.destroyed_at.is_(None)
            )
            .order_by(WorkingCopy.asset_id)
            .with_for_update()
        )
    )
    destroyed = []
    for copy in copies:
        now = utcnow()
        asset = copy.asset
        key = session.get(DataKey, asset.id)
        if key is not None:
            session.delete(key)
        asset.destroyed_at = asset.destroyed_at or now
        copy.destroyed_at = now
        copy.destroyed_by = actor
        session.flush()

        audit.append(
            actor=actor,
            action="asset.destroy",
            outcome="success",
            source="ethics",
            target=asset.id,
            project=project.name,
            detail={
                "reason": reason,
                "blob_id": asset.blob_id,
                "method": DESTRUCTION_METHOD,
                "what": f"working copy {asset.original_name} of project {project.name}",
                "destroyed_at": now.isoformat(),
                "key_was_present": key is not None,
            },
            session=session,
        )
        log.info(
            "destroyed working copy %s of project %s by key destruction",
            asset.id,
            project.name,
        )
        destroyed.append(asset.id)
    return destroyed
