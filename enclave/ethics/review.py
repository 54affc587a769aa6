"""Shared steps of every committee decision: locking, separation of duties, votes.

Each decision locks the project's row first (``SELECT ... FOR UPDATE``; on
SQLite the session is opened with ``catalog.session(immediate=True)``), so
concurrent decisions on one project are applied one after the other and
exactly one of them changes its state. A refusal is recorded in the audit
trail before :class:`~enclave.errors.PermissionDenied` is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave import projects
from enclave.catalog.models import Dataset, Project
from enclave.errors import EnclaveError, NotFound, PermissionDenied, ValidationError
from enclave.ethics.models import Amendment, Review, ReviewDecision
from enclave.policy import rules_for

if TYPE_CHECKING:
    from enclave.audit import AuditLog

__all__ = [
    "APPLICATION",
    "SOURCE",
    "DecisionConflict",
    "active_members",
    "amendment_subject",
    "check_decision",
    "check_reviewer",
    "datasets_by_name",
    "deny",
    "lock_project",
    "record_vote",
    "require_text",
    "required_approvals_for",
    "round_conditions",
    "round_votes",
]

log = logging.getLogger(__name__)

APPLICATION = "application"
"""``Review.subject`` of votes on the application itself."""

SOURCE = "ethics"
"""``source`` of the audit events that the ethics workflow records."""


class DecisionConflict(EnclaveError):
    """The project changed since the caller looked at it; reload and decide again."""


def amendment_subject(amendment: Amendment) -> str:
    return f"amendment:{amendment.id}"


def lock_project(
    session: Session, name: str, *, expected_version: int | None = None
) -> Project:
    """Load project ``name`` and lock its row until the session's transaction ends.

    Parameters
    ----------
    expected_version
        The ``Project.version`` the caller's decision was based on, e.g. the
        one shown on the page; a different current version raises.

    Raises
    ------
    NotFound
        If there is no such project.
    DecisionConflict
        If ``expected_version`` is given and the project changed since.
    """
    project = session.scalars(
        select(Project)
        .where(Project.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if project is None:
        raise NotFound(
            f"project {name!r} not found; check the name on the project list"
        )
    if expected_version is not None and project.version != expected_version:
        raise DecisionConflict(
            f"project {name!r} changed while you were looking at it (version "
            f"{expected_version} became {project.version}); reload the page and "
            "decide again"
        )
    return projects.get_project(session, name)


def active_members(project: Project) -> list[str]:
    """Return the user names of the project's current members, the PI included."""
    names = {m.username for m in project.members if m.removed_at is None}
    names.add(project.principal_investigator)
    return sorted(names)


def deny(
    session: Session,
    audit: AuditLog,
    *,
    actor: str,
    action: str,
    project: str,
    reason: str,
) -> PermissionDenied:
    # A refusal is recorded, but nothing else of the refused transaction is.
    session.rollback()
    audit.append(
        actor=actor,
        action=action,
        outcome="denied",
        source=SOURCE,
        project=project,
        detail={"reason": reason},
        session=session,
    )
    session.commit()
    log.warning("rejected %s by %s on project %s: %s", action, actor, project, reason)
    return PermissionDenied(reason)


def check_reviewer(
    session: Session, audit: AuditLog, project: Project, reviewer: str, action: str
) -> None:
    # Separation of duties: nobody decides about a project they applied for or
    # would work in.
    if reviewer == project.created_by:
        reason = (
            f"{reviewer!r} applied for project {project.name!r} and cannot review it; "
            "another member of the ethics committee must decide"
        )
    elif reviewer in active_members(project):
        reason = (
            f"{reviewer!r} is a member of project {project.name!r} and cannot review "
            "it; another member of the ethics committee must decide"
        )
    else:
        return
    raise deny(
        session,
        audit,
        actor=reviewer,
        action=action,
        project=project.name,
        reason=reason,
    )


def datasets_by_name(session: Session, names: Iterable[str]) -> dict[str, Dataset]:
    names = list(names)
    return {
        dataset.name: dataset
        for dataset in session.scalars(select(Dataset).where(Dataset.name.in_(names)))
    }


def required_approvals_for(session: Session, levels: Iterable[int]) -> int:
    """Return how many approvals a project with datasets of these levels needs."""
    return max(
        (rules_for(session, level).min_approvals for level in set(levels)), default=1
    )


def require_text(value: str, what: str) -> str:
    if not value or not value.strip():
        raise ValidationError(f"the {what} is missing; write it in the text box")
    return value.strip()


def check_decision(
    decision: ReviewDecision | str, conditions: str, comment: str
) -> ReviewDecision:
    try:
        decision = ReviewDecision(decision)
    except ValueError:
        choices = ", ".join(d.value for d in ReviewDecision)
        raise ValidationError(
            f"unknown decision {decision!r}; choose one of {choices}"
        ) from None
    if decision is ReviewDecision.APPROVE_WITH_CONDITIONS:
        require_text(conditions, "list of conditions of the approval")
    if decision in (ReviewDecision.REJECT, ReviewDecision.REQUEST_CHANGES):
        require_text(comment, "comment explaining the decision")
    return decision


def record_vote(
    session: Session,
    project: Project,
    subject: str,
    review_round: int,
    reviewer: str,
    decision: ReviewDecision,
    conditions: str,
    comment: str,
) -> Review:
    earlier = session.scalars(
        select(Review).where(
            Review.project_id == project.id,
            Review.subject == subject,
            Review.review_round == review_round,
            Review.reviewer == reviewer,
        )
    ).first()
    if earlier is not None:
        raise ValidationError(
            f"{reviewer!r} already decided ({earlier.decision.value}) in this review "
            f"round of {project.name!r}; another committee member must decide"
        )
    review = Review(
        project_id=project.id,
        subject=subject,
        review_round=review_round,
        reviewer=reviewer,
        decision=decision,
        conditions=conditions.strip(),
        comment=comment.strip(),
    )
    session.add(review)
    return review


def round_votes(
    session: Session, project: Project, subject: str, review_round: int
) -> list[Review]:
    return list(
        session.scalars(
            select(Review)
            .where(
                Review.project_id == project.id,
                Review.subject == subject,
                Review.review_round == review_round,
            )
            .order_by(Review.id)
        )
    )


def round_conditions(
    session: Session, project: Project, subject: str, review_round: int
) -> str:
    session.flush()
    return "\n".join(
        vote.conditions
        for vote in round_votes(session, project, subject, review_round)
        if vote.decision is ReviewDecision.APPROVE_WITH_CONDITIONS and vote.conditions
    )
