"""Notices that tell members why their access to a project ended."""

from __future__ import annotations

from sqlalchemy.orm import Session

from enclave.catalog.models import utcnow
from enclave.errors import NotFound
from enclave.ethics.models import AccessNotice

__all__ = ["dismiss_notice"]


def dismiss_notice(session: Session, username: str, notice_id: int) -> None:
    """Hide notice ``notice_id`` of ``username`` from their page; it stays stored.

    Raises
    ------
    NotFound
        If the notice does not exist or belongs to another user.
    """
    notice = session.get(AccessNotice, notice_id)
    if notice is None or notice.username != username:
        raise NotFound(f"notice {notice_id} not found")
    notice.dismissed_at = notice.dismissed_at or utcnow()
