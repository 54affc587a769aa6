"""Read-only views of projects for the ethics pages, built inside one session.

The pages render plain dataclasses rather than ORM objects, so nothing is
loaded lazily after the session has closed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from enclave import projects
from enclave.catalog.models import (
    Dataset,
    Project,
    ProjectMember,
    ProjectStatus,
)
from enclave.ethics.acceptance import has_accepted_agreement
from enclave.ethics.amendments import amendment_approvals_required
from enclave.ethics.models import (
    AccessNotice,
    Amendment,
    AmendmentStatus,
    EthicsApplication,
    Review,
    ReviewDecision,
)
from enclave.ethics.review import APPLICATION, active_members, amendment_subject

__all__ = [
    "AmendmentView",
    "DatasetView",
    "NoticeView",
    "ProjectView",
    "ReviewView",
    "Viewer",
    "list_datasets",
    "list_notices",
    "list_projects_for",
    "project_view",
]

APPROVING = (ReviewDecision.APPROVE, ReviewDecision.APPROVE_WITH_CONDITIONS)


@dataclass(frozen=True)
class Viewer:
    """The signed-in hub user and the roles their hub groups give them."""

    name: str
    groups: frozenset[str]
    committee: bool
    security_admin: bool


@dataclass(frozen=True)
class DatasetView:
    name: str
    level: int
    category: str
    description: str


@dataclass(frozen=True)
class ReviewView:
    reviewer: str
    decision: str
    conditions: str
    comment: str
    created_at: dt.datetime
    review_round: int


@dataclass(frozen=True)
class AmendmentView:
    id: int
    status: str
    add_members: list[str]
    add_datasets: list[str]
    new_ends_on: dt.date | None
    reason: str
    created_by: str
    created_at: dt.datetime
    conditions: str
    required: int
    approvals: int
    reviews: list[ReviewView]
    viewer_may_review: bool
    viewer_conflict: str | None
    viewer_may_withdraw: bool


@dataclass(frozen=True)
class ProjectView:
    """Everything the project page shows, and what the viewer may do on it."""

    name: str
    title: str
    status: str
    use_scene: str
    summary: str
    principal_investigator: str
    applicant: str
    members: list[str]
    datasets: list[DatasetView]
    deid_profile: str
    starts_on: dt.date
    ends_on: dt.date
    ethics_ref: str
    consent_basis: str
    version: int
    review_round: int
    conditions: str
    required: int
    approvals: int
    end_reason: str | None
    reviews: list[ReviewView]
    amendments: list[AmendmentView] = field(default_factory=list)
    viewer_is_member: bool = False
    viewer_accepted: bool = False
    viewer_may_review: bool = False
    viewer_conflict: str | None = None
    viewer_may_edit: bool = False
    viewer_may_amend: bool = False


@dataclass(frozen=True)
class NoticeView:
    id: int
    project: str
    title: str
    cause: str
    reason: str
    created_at: dt.datetime


def list_datasets(session: Session) -> list[DatasetView]:
    """Return the published datasets a project may request, by name."""
    return [
        DatasetView(d.name, d.level, d.category.value, d.description)
        for d in session.scalars(select(Dataset).order_by(Dataset.name))
    ]


def _conflict(project: Project, viewer: Viewer) -> str | None:
    if viewer.name == project.created_by:
        return "You applied for this project, so you cannot review it."
    if viewer.name in active_members(project):
        return "You are a member of this project, so you cannot review it."
    return None


def _reviews(session: Session, project: Project, subject: str) -> list[ReviewView]:
    return [
        ReviewView(
            r.reviewer,
            r.decision.value,
            r.conditions,
            r.comment,
            r.created_at,
            r.review_round,
        )
        for r in session.scalars(
            select(Review)
            .where(Review.project_id == project.id, Review.subject == subject)
            .order_by(Review.id)
        )
    ]


def _amendment_view(
    session: Session, project: Project, amendment: Amendment, viewer: Viewer
) -> AmendmentView:
    reviews = _reviews(session, project, amendment_subject(amendment))
    current = [r for r in reviews if r.review_round == amendment.review_round]
    conflict = _conflict(project, viewer)
    if conflict is None and (
        viewer.name in amendment.add_members or viewer.name == amendment.created_by
    ):
        conflict = (
            "You asked for or are named in this amendment, so you cannot review it."
        )
    voted = any(r.reviewer == viewer.name for r in current)
    pending = amendment.status is AmendmentStatus.SUBMITTED
    return AmendmentView(
        id=amendment.id,
        status=amendment.status.value,
        add_members=list(amendment.add_members),
        add_datasets=list(amendment.add_datasets),
        new_ends_on=amendment.new_ends_on,
        reason=amendment.reason,
        created_by=amendment.created_by,
        created_at=amendment.created_at,
        conditions=amendment.conditions,
        required=amendment_approvals_required(session, project, amendment),
        approvals=sum(ReviewDecision(r.decision) in APPROVING for r in current),
        reviews=reviews,
        viewer_may_review=(
            viewer.committee and pending and conflict is None and not voted
        ),
        viewer_conflict=conflict if viewer.committee and pending else None,
        viewer_may_withdraw=pending
        and viewer.name in (amendment.created_by, project.principal_investigator),
    )


def may_view(project: Project, viewer: Viewer) -> bool:
    """Return whether ``viewer`` may see ``project``: its people, committee, admins."""
    return (
        viewer.committee
        or viewer.security_admin
        or viewer.name == project.created_by
        or viewer.name in {m.username for m in project.members}
    )


def project_view(session: Session, name: str, viewer: Viewer) -> ProjectView | None:
    """Return the page of project ``name``, or None if ``viewer`` may not see it."""
    project = projects.get_project(session, name)
    if not may_view(project, viewer):
        return None
    record = session.get(EthicsApplication, project.id)
    review_round = record.review_round if record else 1
    reviews = _reviews(session, project, APPLICATION)
    current = [r for r in reviews if r.review_round == review_round]
    members = active_members(project)
    conflict = _conflict(project, viewer)
    submitted = project.status is ProjectStatus.SUBMITTED
    voted = any(r.reviewer == viewer.name for r in current)
    amendments = [
        _amendment_view(session, project, amendment, viewer)
        for amendment in session.scalars(
            select(Amendment)
            .where(Amendment.project_id == project.id)
            .order_by(Amendment.id.desc())
        )
    ]
    approved = project.status is ProjectStatus.APPROVED

    return ProjectView(
        name=project.name,
        title=project.title,
        status=project.status.value,
        use_scene=project.purpose,
        summary=record.summary if record else "",
        principal_investigator=project.principal_investigator,
        applicant=project.created_by,
        members=members,
        datasets=[
            DatasetView(
                g.dataset.name,
                g.dataset.level,
                g.dataset.category.value,
                g.dataset.description,
            )
            for g in sorted(project.grants, key=lambda g: g.dataset.name)
            if g.revoked_at is None or not approved
        ],
        deid_profile=project.deid_profile,
        starts_on=project.starts_on,
        ends_on=project.ends_on,
        ethics_ref=project.ethics_ref or "",
        consent_basis=project.consent_basis or "",
        version=project.version,
        review_round=review_round,
        conditions=record.conditions if record else "",
        required=projects.required_approvals(session, project),
        # The approval rows of enclave.projects, which also counts approvals
        # given with `enclave project approve`. A request for changes clears them.
        approvals=len(project.approvals),
        end_reason=project.end_reason,
        reviews=reviews,
        amendments=amendments,
        viewer_is_member=viewer.name in members,
        viewer_accepted=has_accepted_agreement(session, viewer.name, project),
        viewer_may_review=(
            viewer.committee and submitted and conflict is None and not voted
        ),
        viewer_conflict=conflict if viewer.committee and submitted else None,
        viewer_may_edit=(
            project.status is ProjectStatus.CHANGES_REQUESTED
            and viewer.name in (project.created_by, project.principal_investigator)
        ),
        viewer_may_amend=approved
        and viewer.name in set(members) | {project.created_by}
        and not any(a.status == AmendmentStatus.SUBMITTED.value for a in amendments),
    )


@dataclass(frozen=True)
class ProjectRow:
    """One line of a project list."""

    name: str
    title: str
    status: str
    principal_investigator: str
    ends_on: dt.date
    pending_amendment: bool
    viewer_accepted: bool
    viewer_is_member: bool


def list_projects_for(session: Session, viewer: Viewer) -> dict[str, list[ProjectRow]]:
    """Return the lists of the front page: the viewer's projects, reviews, all others.

    ``mine`` contains the projects the viewer applied for or works in.
    ``to_review`` (committee only) contains the submitted projects and those
    with a pending amendment. ``all`` (committee and security administrators)
    contains every project.
    """
    query = select(Project).order_by(Project.name)
    if not (viewer.committee or viewer.security_admin):
        member_of = select(ProjectMember.project_id).where(
            ProjectMember.username == viewer.name
        )
        query = query.where(
            or_(Project.created_by == viewer.name, Project.id.in_(member_of))
        )
    pending = set(
        session.scalars(
            select(Amendment.project_id).where(
                Amendment.status == AmendmentStatus.SUBMITTED
            )
        )
    )

    lists: dict[str, list[ProjectRow]] = {"mine": [], "to_review": [], "all": []}
    for project in session.scalars(query):
        members = active_members(project)
        row = ProjectRow(
            name=project.name,
            title=project.title,
            status=project.status.value,
            principal_investigator=project.principal_investigator,
            ends_on=project.ends_on,
            pending_amendment=project.id in pending,
            viewer_accepted=has_accepted_agreement(session, viewer.name, project),
            viewer_is_member=viewer.name in members,
        )
        if viewer.name in members or viewer.name == project.created_by:
            lists["mine"].append(row)
        if viewer.committee and (
            project.status is ProjectStatus.SUBMITTED or row.pending_amendment
        ):
            lists["to_review"].append(row)
        if viewer.committee or viewer.security_admin:
            lists["all"].append(row)
    return lists


def list_notices(session: Session, username: str) -> list[NoticeView]:
    """Return the undismissed notices telling ``username`` why access ended."""
    notices = session.scalars(
        select(AccessNotice)
        .where(AccessNotice.username == username, AccessNotice.dismissed_at.is_(None))
        .order_by(AccessNotice.id.desc())
    )
    return [
        NoticeView(
            n.id,
            n.project.name,
            n.project.title,
            n.cause.value,
            n.reason,
            n.created_at,
        )
        for n in notices
    ]
