"""Acceptance of the data use agreement by each member before their first data use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave.catalog.models import Project, ProjectStatus
from enclave.errors import ValidationError
from enclave.ethics.agreement import current_agreement
from enclave.ethics.models import AgreementAcceptance
from enclave.ethics.review import (
    SOURCE,
    DecisionConflict,
    active_members,
    deny,
    lock_project,
)

if TYPE_CHECKING:
    from enclave.audit import AuditLog

__all__ = ["accept_agreement", "has_accepted_agreement"]


def _project_ref(session: Session, project: Project | str) -> Project | None:
    if isinstance(project, Project):
        return project
    return session.scalars(select(Project).where(Project.name == project)).one_or_none()


def has_accepted_agreement(
    session: Session, username: str, project: Project | str
) -> bool:
    """Return whether ``username`` accepted the current agreement for ``project``.

    ``project`` is a :class:`~enclave.catalog.models.Project` or a project
    name. An acceptance of an earlier version of the agreement does not
    count: after a new version is published, members accept it before their
    next data access.
    """
    project = _project_ref(session, project)
    if project is None:
        return False
    version = current_agreement().version
    return (
        session.scalars(
            select(AgreementAcceptance.id).where(
                AgreementAcceptance.project_id == project.id,
                AgreementAcceptance.username == username,
                AgreementAcceptance.agreement_version == version,
            )
        ).first()
        is not None
    )


def accept_agreement(
    session: Session,
    audit: AuditLog,
    name: str,
    *,
    username: str,
    language: str = "en",
    text_sha256: str | None = None,
) -> AgreementAcceptance:
    """Record that ``username`` accepted the current data use agreement for a project.

    Parameters
    ----------
    language
        Language of the text the member read (``en`` or ``zh_CN``).
    text_sha256
        SHA-256 of the text the page showed. When given, it must match the
        current text, so that an acceptance never refers to a text the member
        did not see.

    Raises
    ------
    PermissionDenied
        If ``username`` is not a member of the project.
    ValidationError
        If the project is not approved or the page showed another text.
    """
    project = lock_project(session, name)
    if username not in active_members(project):
        raise deny(
            session,
            audit,
            actor=username,
            action="agreement.accept",
            project=name,
            reason=(
                f"{username!r} is not a member of project {name!r}; only members "
                "accept its data use agreement"
            ),
        )
    if project.status != ProjectStatus.APPROVED:
        raise ValidationError(
            f"project {name!r} is {project.status.value}; the agreement can be "
            "accepted once the project is approved"
        )
    agreement = current_agreement()
    language = agreement.language_for(language)
    digest = agreement.sha256(language)
    if text_sha256 is not None and text_sha256 != digest:
        raise DecisionConflict(
            f"the agreement text you read is not the current version "
            f"{agreement.version}; reload the page, read it and accept again"
        )

    existing = session.scalars(
        select(AgreementAcceptance).where(
            AgreementAcceptance.project_id == project.id,
            AgreementAcceptance.username == username,
            AgreementAcceptance.agreement_version == agreement.version,
        )
    ).first()
    if existing is not None:
        return existing
    acceptance = AgreementAcceptance(
        project_id=project.id,
        username=username,
        agreement_version=agreement.version,
        language=language,
        text_sha256=digest,
    )
    session.add(acceptance)
    audit.append(
        actor=username,
        action="agreement.accept",
        outcome="success",
        source=SOURCE,
        project=name,
        target=f"agreement:{agreement.version}",
        detail={
            "version": agreement.version,
            "language": language,
            "text_sha256": digest,
        },
        session=session,
    )
    return acceptance
