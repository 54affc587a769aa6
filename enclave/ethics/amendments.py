"""Amendments: new members, new datasets or a later end date of an approved project.

An amendment is reviewed by the rules of an application, counted against the
levels the project would have after it. Until it is approved the project
keeps its approved members, datasets and end date. A request for changes
closes the amendment; the members then submit a corrected one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave import projects
from enclave.catalog.models import Grant, Project, ProjectMember, ProjectStatus, utcnow
from enclave.errors import NotFound, ValidationError
from enclave.ethics.forms import AmendmentRequest, FieldError, FormInvalid
from enclave.ethics.models import Amendment, AmendmentStatus, ReviewDecision
from enclave.ethics.review import (
    SOURCE,
    DecisionConflict,
    active_members,
    amendment_subject,
    check_decision,
    check_reviewer,
    datasets_by_name,
    deny,
    lock_project,
    record_vote,
    required_approvals_for,
    round_conditions,
    round_votes,
)

if TYPE_CHECKING:
    from enclave.audit import AuditLog

__all__ = [
    "amendment_approvals_required",
    "pending_amendment",
    "review_amendment",
    "submit_amendment",
    "withdraw_amendment",
]

log = logging.getLogger(__name__)


def submit_amendment(
    session: Session,
    audit: AuditLog,
    name: str,
    request: AmendmentRequest,
    *,
    requested_by: str,
) -> Amendment:
    """Ask the committee to add members or datasets or to extend an approved project.

    Raises
    ------
    PermissionDenied
        If ``requested_by`` is neither a member, the PI nor the applicant.
    ValidationError
        If the project is not approved, another amendment is pending, or the
        request adds nothing new.
    """
    project = lock_project(session, name)
    allowed = set(active_members(project)) | {project.created_by}
    if requested_by not in allowed:
        raise deny(
            session,
            audit,
            actor=requested_by,
            action="amendment.submit",
            project=name,
            reason=(
                f"{requested_by!r} is not a member of project {name!r}; only its "
                "members may ask for an amendment"
            ),
        )
    if project.status != ProjectStatus.APPROVED:
        raise ValidationError(
            f"project {name!r} is {project.status.value}; only an approved project "
            "can be amended"
        )
    if pending_amendment(session, project) is not None:
        raise ValidationError(
            f"project {name!r} already has an amendment under review; wait for the "
            "committee's decision before asking for another"
        )
    _check_amendment(session, project, request)

    amendment = Amendment(
        project_id=project.id,
        add_members=list(request.add_members),
        add_datasets=list(request.add_datasets),
        new_ends_on=request.new_ends_on,
        reason=request.reason,
        created_by=requested_by,
    )
    session.add(amendment)
    session.flush()
    audit.append(
        actor=requested_by,
        action="amendment.submit",
        outcome="success",
        source=SOURCE,
        project=name,
        target=amendment_subject(amendment),
        detail=_amendment_detail(amendment),
        session=session,
    )
    return amendment


def _amendment_detail(amendment: Amendment) -> dict[str, object]:
    return {
        "status": amendment.status.value,
        "add_members": amendment.add_members,
        "add_datasets": amendment.add_datasets,
        "new_ends_on": amendment.new_ends_on.isoformat()
        if amendment.new_ends_on
        else None,
        "reason": amendment.reason,
    }


def pending_amendment(session: Session, project: Project) -> Amendment | None:
    return session.scalars(
        select(Amendment).where(
            Amendment.project_id == project.id,
            Amendment.status == AmendmentStatus.SUBMITTED,
        )
    ).first()


def _check_amendment(
    session: Session, project: Project, request: AmendmentRequest
) -> None:
    errors = []
    members = set(active_members(project))
    for username in request.add_members:
        if username in members:
            errors.append(
                FieldError(
                    "add_members",
                    "%(value)r is already a member; remove the name from the list.",
                    {"value": username},
                )
            )
    granted = {
        grant.dataset.name for grant in project.grants if grant.revoked_at is None
    }
    found = datasets_by_name(session, request.add_datasets)
    for dataset in request.add_datasets:
        if dataset in granted:
            errors.append(
                FieldError(
                    "add_datasets",
                    "Dataset %(value)r is already granted to the project; remove it "
                    "from the list.",
                    {"value": dataset},
                )
            )
        elif dataset not in found:
            errors.append(
                FieldError(
                    "add_datasets",
                    "Dataset %(value)r does not exist; choose from the published "
                    "datasets.",
                    {"value": dataset},
                )
            )
    if request.new_ends_on is not None and request.new_ends_on <= project.ends_on:
        errors.append(
            FieldError(
                "new_ends_on",
                "New end date %(value)s is not later than the current end date "
                "%(current)s; an amendment can only extend a project.",
                {
                    "value": request.new_ends_on.isoformat(),
                    "current": project.ends_on.isoformat(),
                },
            )
        )
    if not (request.add_members or request.add_datasets or request.new_ends_on):
        errors.append(
            FieldError(
                "add_members",
                "The amendment changes nothing; add a member, a dataset or a later "
                "end date.",
            )
        )
    if errors:
        raise FormInvalid(errors)


def amendment_approvals_required(
    session: Session, project: Project, amendment: Amendment
) -> int:
    """Return how many approvals ``amendment`` needs, by the levels after it."""
    levels = [
        grant.dataset.level for grant in project.grants if grant.revoked_at is None
    ]
    levels += [
        d.level for d in datasets_by_name(session, amendment.add_datasets).values()
    ]
    return required_approvals_for(session, levels)


def review_amendment(
    session: Session,
    audit: AuditLog,
    name: str,
    amendment_id: int,
    *,
    reviewer: str,
    decision: ReviewDecision | str,
    conditions: str = "",
    comment: str = "",
    expected_version: int | None = None,
) -> Amendment:
    """Record one committee member's decision on a pending amendment.

    The rules are those of :func:`review_application`. An approved amendment
    adds its members and dataset grants and moves the end date. A request
    for changes closes it, and the members submit a corrected amendment.

    Raises
    ------
    PermissionDenied, DecisionConflict, ValidationError
        As :func:`review_application`.
    """
    decision = check_decision(decision, conditions, comment)
    project = lock_project(session, name, expected_version=expected_version)
    amendment = session.get(Amendment, amendment_id, populate_existing=True)
    if amendment is None or amendment.project_id != project.id:
        raise NotFound(f"amendment {amendment_id} of project {name!r} not found")
    check_reviewer(session, audit, project, reviewer, f"amendment.{decision.value}")
    # Members named by the amendment would review their own admission.
    if reviewer in amendment.add_members or reviewer == amendment.created_by:
        raise deny(
            session,
            audit,
            actor=reviewer,
            action=f"amendment.{decision.value}",
            project=name,
            reason=(
                f"{reviewer!r} asked for or is named in this amendment of {name!r} "
                "and cannot review it; another committee member must decide"
            ),
        )
    if (
        amendment.status != AmendmentStatus.SUBMITTED
        or project.status != ProjectStatus.APPROVED
    ):
        raise DecisionConflict(
            f"amendment {amendment_id} of {name!r} is {amendment.status.value} and the "
            f"project is {project.status.value}; reload the page to see the decision"
        )
    subject = amendment_subject(amendment)
    record_vote(
        session,
        project,
        subject,
        amendment.review_round,
        reviewer,
        decision,
        conditions,
        comment,
    )
    session.flush()

    if decision is ReviewDecision.REJECT:
        amendment.status = AmendmentStatus.REJECTED
    elif decision is ReviewDecision.REQUEST_CHANGES:
        amendment.status = AmendmentStatus.CHANGES_REQUESTED
    else:
        approvals = sum(
            vote.decision
            in (ReviewDecision.APPROVE, ReviewDecision.APPROVE_WITH_CONDITIONS)
            for vote in round_votes(session, project, subject, amendment.review_round)
        )
        required = amendment_approvals_required(session, project, amendment)
        if approvals >= required:
            _apply_amendment(session, project, amendment, reviewer)
            amendment.conditions = round_conditions(
                session, project, subject, amendment.review_round
            )
    if amendment.status != AmendmentStatus.SUBMITTED:
        amendment.decided_at = utcnow()

    audit.append(
        actor=reviewer,
        action=f"amendment.{decision.value}",
        outcome="success",
        source=SOURCE,
        project=name,
        target=subject,
        detail=_amendment_detail(amendment),
        session=session,
    )
    session.flush()
    return amendment


def _apply_amendment(
    session: Session, project: Project, amendment: Amendment, approver: str
) -> None:
    members = {m.username: m for m in project.members}
    for username in amendment.add_members:
        member = members.get(username)
        if member is None:
            project.members.append(ProjectMember(username=username, role="member"))
        else:
            member.removed_at = None
    datasets = datasets_by_name(session, amendment.add_datasets)
    grants = {grant.dataset_id: grant for grant in project.grants}
    for dataset in datasets.values():
        grant = grants.get(dataset.id)
        if grant is None:
            project.grants.append(Grant(dataset=dataset, granted_by=approver))
        else:
            grant.revoked_at = None
    if amendment.new_ends_on is not None:
        project.ends_on = amendment.new_ends_on
    projects.check_separation_of_duties(project)
    amendment.status = AmendmentStatus.APPROVED


def withdraw_amendment(
    session: Session, audit: AuditLog, name: str, amendment_id: int, *, actor: str
) -> Amendment:
    """Withdraw a pending amendment; only the member who asked for it or the PI may.

    Raises
    ------
    PermissionDenied
        If ``actor`` neither asked for the amendment nor leads the project.
    DecisionConflict
        If the committee already decided about the amendment.
    """
    project = lock_project(session, name)
    amendment = session.get(Amendment, amendment_id, populate_existing=True)
    if amendment is None or amendment.project_id != project.id:
        raise NotFound(f"amendment {amendment_id} of project {name!r} not found")
    if actor not in (amendment.created_by, project.principal_investigator):
        raise deny(
            session,
            audit,
            actor=actor,
            action="amendment.withdraw",
            project=name,
            reason=(
                f"{actor!r} did not ask for amendment {amendment_id} of {name!r}; "
                f"only {amendment.created_by!r} or the principal investigator may "
                "withdraw it"
            ),
        )
    if amendment.status != AmendmentStatus.SUBMITTED:
        raise DecisionConflict(
            f"amendment {amendment_id} of {name!r} is {amendment.status.value}; only a "
            "pending amendment can be withdrawn"
        )

    amendment.status = AmendmentStatus.WITHDRAWN
    amendment.decided_at = utcnow()
    audit.append(
        actor=actor,
        action="amendment.withdraw",
        outcome="success",
        source=SOURCE,
        project=name,
        target=amendment_subject(amendment),
        detail=_amendment_detail(amendment),
        session=session,
    )
    return amendment
