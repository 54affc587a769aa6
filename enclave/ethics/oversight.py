"""Oversight by security administrators: suspend, resume and terminate projects.

Suspension and termination close the project's access at once through
:func:`enclave.lifecycle.revocation.close_access`; the hub steps follow within
one sweep of the ethics service.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from enclave import projects
from enclave.catalog.models import Project, ProjectStatus
from enclave.errors import ValidationError
from enclave.ethics.models import ClosureCause
from enclave.ethics.review import SOURCE, DecisionConflict, lock_project, require_text

if TYPE_CHECKING:
    from enclave.audit import AuditLog

__all__ = ["resume", "suspend", "terminate"]


def suspend(
    session: Session, audit: AuditLog, name: str, *, actor: str, reason: str
) -> Project:
    """Suspend an approved project; its members lose access until it is resumed.

    The project's working copies are destroyed by key destruction, as at
    its end. The broker rejects the project's datasets while it is suspended.

    Raises
    ------
    ValidationError
        If the project is not approved or the reason is empty.
    """
    from enclave.lifecycle.revocation import close_access

    reason = require_text(reason, "reason for the suspension")
    project = lock_project(session, name)
    if project.status != ProjectStatus.APPROVED:
        raise DecisionConflict(
            f"project {name!r} is {project.status.value}; only an approved project "
            "can be suspended"
        )

    project.status = ProjectStatus.SUSPENDED
    project.end_reason = reason
    audit.append(
        actor=actor,
        action="project.suspend",
        outcome="success",
        source=SOURCE,
        project=name,
        detail={"status": project.status.value, "reason": reason},
        session=session,
    )
    close_access(
        session,
        audit,
        project,
        cause=ClosureCause.SUSPENDED,
        reason=reason,
        actor=actor,
    )
    return project


def resume(
    session: Session, audit: AuditLog, name: str, *, actor: str, reason: str
) -> Project:
    """Lift a suspension; members get access again if the project has not ended.

    Working copies destroyed at the suspension stay destroyed, and the
    ``project.resume`` audit event lists them.

    Raises
    ------
    ValidationError
        If the project is not suspended, its end date has passed, or the
        reason is empty.
    """
    from enclave.lifecycle.revocation import reopen_access

    reason = require_text(reason, "reason for resuming the project")
    project = lock_project(session, name)
    if project.status != ProjectStatus.SUSPENDED:
        raise DecisionConflict(
            f"project {name!r} is {project.status.value}; only a suspended project "
            "can be resumed"
        )
    if project.ends_on < dt.date.today():
        raise ValidationError(
            f"project {name!r} ended on {project.ends_on.isoformat()}; it cannot be "
            "resumed, apply for a new project instead"
        )

    project.status = ProjectStatus.APPROVED
    project.end_reason = None
    destroyed = reopen_access(session, project)
    audit.append(
        actor=actor,
        action="project.resume",
        outcome="success",
        source=SOURCE,
        project=name,
        detail={
            "status": project.status.value,
            "reason": reason,
            "working_copies_destroyed": destroyed,
        },
        session=session,
    )
    return project


def terminate(
    session: Session, audit: AuditLog, name: str, *, actor: str, reason: str
) -> Project:
    """End a project early; access is revoked and its working copies destroyed.

    Raises
    ------
    ValidationError
        If the project is already rejected, terminated or ended, or the
        reason is empty.
    """
    from enclave.lifecycle.revocation import close_access

    reason = require_text(reason, "reason for the termination")
    project = lock_project(session, name)
    had_access = project.approved_at is not None
    projects.terminate_project(
        session, name, actor, audit=audit, reason=reason, source=SOURCE
    )
    if had_access:
        close_access(
            session,
            audit,
            project,
            cause=ClosureCause.TERMINATED,
            reason=reason,
            actor=actor,
        )
    return project
