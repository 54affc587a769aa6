"""Research projects: creation, review, termination and the read check.

A project names its principal investigator (PI), its members, the datasets
it reads and the dates it runs. It starts as a draft, the PI submits it, and
reviewers who are neither the PI nor members approve or reject it. The
number of approvals needed is the highest ``min_approvals`` among the levels
of its datasets. Members read a dataset only while the project is approved,
between its start and end dates, and while the dataset's grant is not revoked.

Each state change records an audit event in the same transaction, so the
change and its record commit together or not at all. On SQLite, open the
session with ``catalog.session(immediate=True)``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from enclave.catalog.models import (
    Dataset,
    Grant,
    Project,
    ProjectApproval,
    ProjectMember,
    ProjectStatus,
    utcnow,
)
from enclave.errors import NotFound, PermissionDenied, ValidationError
from enclave.policy import rules_for

if TYPE_CHECKING:
    from enclave.audit.log import AuditLog

__all__ = [
    "approve_project",
    "authorize_read",
    "create_project",
    "get_project",
    "list_projects",
    "parse_date",
    "reject_project",
    "required_approvals",
    "submit_project",
    "terminate_project",
]

log = logging.getLogger(__name__)

PROJECT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}$")
USER_NAME_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")

CLOSED_STATUSES = (
    ProjectStatus.REJECTED,
    ProjectStatus.TERMINATED,
    ProjectStatus.ENDED,
)


def parse_date(value: dt.date | str, label: str) -> dt.date:
    """Return ``value`` as a date; ``label`` names it in the error message.

    Raises
    ------
    ValidationError
        If ``value`` is neither a date nor an ISO date string (YYYY-MM-DD).
    """
    if isinstance(value, dt.datetime):
        raise ValidationError(f"{label} {value!r} is a date and time; pass a date")
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValidationError(
            f"invalid {label} {value!r}; use an ISO date such as 2027-01-31"
        ) from None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not PROJECT_NAME_RE.match(name):
        raise ValidationError(
            f"invalid project name {name!r}; use 3 to 64 lowercase letters, digits "
            "and dashes, starting with a letter or digit"
        )
    return name


def _check_user(user: str, label: str) -> str:
    if not isinstance(user, str) or not USER_NAME_RE.match(user):
        raise ValidationError(
            f"invalid {label} {user!r}; use a user name of letters, digits "
            "and the characters . _ @ + -"
        )
    return user


def _check_text(value: str | None, label: str) -> str:
    if value is None or not value.strip():
        raise ValidationError(f"the {label} is missing; describe it in a few words")
    return value.strip()


def _check_profile(profile: str) -> str:
    from enclave.deid.profiles import PROFILE_NAMES

    if profile not in PROFILE_NAMES:
        raise ValidationError(
            f"unknown de-identification profile {profile!r}; use one of "
            f"{', '.join(PROFILE_NAMES)}"
        )
    return profile


def get_project(session: Session, name: str, *, lock: bool = False) -> Project:
    """Return the project ``name``; raise NotFound if there is none.

    With ``lock``, the project's row stays locked (``SELECT ... FOR UPDATE``)
    until the transaction ends, so concurrent decisions on one project are
    applied one after the other. SQLite has no row locks; there an
    ``immediate`` session serialises the writers instead.
    """
    query = (
        select(Project)
        .where(Project.name == name)
        .options(
            selectinload(Project.members),
            selectinload(Project.grants).selectinload(Grant.dataset),
            selectinload(Project.approvals),
        )
    )
    if lock:
        # Reload what another transaction committed while this one waited.
        query = query.with_for_update(of=Project).execution_options(
            populate_existing=True
        )
    project = session.scalars(query).one_or_none()
    if project is None:
        raise NotFound(
            f"project {name!r} not found; list projects with 'enclave project list'"
        )
    return project


def _active_members(project: Project) -> list[ProjectMember]:
    return [member for member in project.members if member.removed_at is None]


def required_approvals(session: Session, project: Project) -> int:
    """Return the approvals ``project`` needs: the maximum over its datasets' levels."""
    levels = {grant.dataset.level for grant in project.grants}
    return max((rules_for(session, level).min_approvals for level in levels), default=1)


def create_project(
    session: Session,
    *,
    name: str,
    title: str,
    purpose: str,
    pi: str,
    members: Iterable[str],
    datasets: Iterable[str],
    starts_on: dt.date | str,
    ends_on: dt.date | str,
    created_by: str,
    audit: AuditLog,
    deid_profile: str = "baseline",
    ethics_ref: str | None = None,
    consent_basis: str | None = None,
    source: str = "cli",
) -> Project:
    """Create a draft project with its members and dataset grants.

    Parameters
    ----------
    session
        Open catalog session; on SQLite open it with ``immediate=True``.
    name
        3 to 64 lowercase letters, digits and dashes.
    title, purpose
        What the project is and what it uses the data for.
    pi
        User name of the principal investigator, who becomes a member.
    members
        User names of the other members.
    datasets
        Names of the datasets the project reads; at least one.
    starts_on, ends_on
        First and last day of access (dates or ISO strings); the end is after
        the start.
    created_by
        User creating the project.
    audit
        Audit trail that records a ``project.create`` event.
    deid_profile
        De-identification profile the project's data must have.
    ethics_ref, consent_basis
        Ethics approval reference and the legal basis of consent.
    source
        Component making the change, recorded in the audit event.

    Raises
    ------
    ValidationError
        If a value is invalid or the name is taken; nothing is stored.
    NotFound
        If a dataset does not exist.
    AuditUnavailable
        If the event cannot be recorded; nothing is stored.
    """
    _check_name(name)
    title = _check_text(title, "title")
    purpose = _check_text(purpose, "purpose")
    _check_user(pi, "principal investigator")
    _check_user(created_by, "creator")
    member_names = sorted({_check_user(m, "member") for m in members} - {pi})
    dataset_names = sorted(set(datasets))
    if not dataset_names:
        raise ValidationError("a project needs at least one dataset; name one")
    starts_on = parse_date(starts_on, "start date")
    ends_on = parse_date(ends_on, "end date")
    if ends_on <= starts_on:
        raise ValidationError(
            f"end date {ends_on.isoformat()} is not after start date "
            f"{starts_on.isoformat()}; pass an end date after the start"
        )
    _check_profile(deid_profile)
    if session.scalars(select(Project.id).where(Project.name == name)).first():
        raise ValidationError(f"project {name!r} already exists; choose another name")

    found = {
        dataset.name: dataset
        for dataset in session.scalars(
            select(Dataset).where(Dataset.name.in_(dataset_names))
        )
    }
    missing = [n for n in dataset_names if n not in found]
    if missing:
        raise NotFound(
            f"datasets not found: {', '.join(missing)}; derive them first or check "
            "the names"
        )

    project = Project(
        name=name,
        title=title,
        purpose=purpose,
        principal_investigator=pi,
        status=ProjectStatus.DRAFT,
        deid_profile=deid_profile,
        starts_on=starts_on,
        ends_on=ends_on,
        ethics_ref=ethics_ref,
        consent_basis=consent_basis,
        created_by=created_by,
    )
    project.members = [ProjectMember(username=pi, role="pi")] + [
        ProjectMember(username=m, role="member") for m in member_names
    ]
    project.grants = [
        Grant(dataset=found[n], granted_by=created_by) for n in dataset_names
    ]
    check_separation_of_duties(project)
    session.add(project)

    audit.append(
        actor=created_by,
        action="project.create",
        outcome="success",
        source=source,
        project=name,
        detail={
            "title": title,
            "pi": pi,
            "members": member_names,
            "datasets": dataset_names,
            "starts_on": starts_on.isoformat(),
            "ends_on": ends_on.isoformat(),
        },
        session=session,
    )
    log.info("project %s created by %s", name, created_by)
    return project


def check_separation_of_duties(project: Project) -> None:
    """Raise PermissionDenied if a member prepared a dataset the project reads.

    A user who de-identified a dataset (created it or one of its derivatives)
    may not be a member, because the people who remove identities must not be
    the people who analyse the result.
    """
    members = {m.username for m in _active_members(project)}
    for grant in project.grants:
        if grant.revoked_at is not None:
            continue
        dataset = grant.dataset
        preparers = {dataset.created_by} | {
            item.asset.created_by for item in dataset.items
        }
        conflicted = sorted(members & preparers)
        if conflicted:
            raise PermissionDenied(
                f"{', '.join(conflicted)} de-identified dataset {dataset.name!r} and "
                f"so may not be a member of project {project.name!r}; remove them "
                "from the project or have another data steward prepare the dataset"
            )


def _record(
    session: Session,
    audit: AuditLog,
    project: Project,
    actor: str,
    action: str,
    source: str,
    **detail: Any,
) -> None:
    audit.append(
        actor=actor,
        action=action,
        outcome="success",
        source=source,
        project=project.name,
        detail={"status": project.status.value, **detail},
        session=session,
    )
    log.info("project %s: %s by %s", project.name, action, actor)


def _require_status(
    project: Project, allowed: tuple[ProjectStatus, ...], verb: str
) -> None:
    if project.status not in allowed:
        names = " or ".join(status.value for status in allowed)
        raise ValidationError(
            f"project {project.name!r} is {project.status.value}; only a {names} "
            f"project can be {verb}"
        )


def _require_reviewer(project: Project, reviewer: str) -> None:
    # Separation of duties: a reviewer must not work in the project.
    if reviewer == project.principal_investigator:
        raise PermissionDenied(
            f"{reviewer!r} is the principal investigator of {project.name!r} and "
            "cannot review it; ask a member of the ethics committee"
        )
    if any(member.username == reviewer for member in _active_members(project)):
        raise PermissionDenied(
            f"{reviewer!r} is a member of {project.name!r} and cannot review it; "
            "ask a member of the ethics committee"
        )
    if reviewer == project.created_by:
        raise PermissionDenied(
            f"{reviewer!r} applied for {project.name!r} and cannot review it; "
            "ask a member of the ethics committee"
        )


def submit_project(
    session: Session, name: str, actor: str, *, audit: AuditLog, source: str = "cli"
) -> Project:
    """Submit a draft project for review; only its PI or creator may.

    Raises
    ------
    PermissionDenied
        If ``actor`` is neither the PI nor the creator.
    ValidationError
        If the project is not a draft or has changes requested.
    """
    project = get_project(session, name, lock=True)
    if actor not in (project.principal_investigator, project.created_by):
        raise PermissionDenied(
            f"{actor!r} may not submit {name!r}; only its principal investigator "
            f"{project.principal_investigator!r} or creator may"
        )
    _require_status(
        project, (ProjectStatus.DRAFT, ProjectStatus.CHANGES_REQUESTED), "submitted"
    )

    project.status = ProjectStatus.SUBMITTED
    _record(session, audit, project, actor, "project.submit", source)
    return project


def approve_project(
    session: Session,
    name: str,
    approver: str,
    *,
    audit: AuditLog,
    comment: str | None = None,
    source: str = "cli",
) -> Project:
    """Record ``approver``'s approval; approve the project once enough agree.

    Raises
    ------
    PermissionDenied
        If ``approver`` is the PI or a member of the project.
    ValidationError
        If the project is not submitted or ``approver`` already approved it.
    AuditUnavailable
        If the approval cannot be recorded; nothing changes.
    """
    _check_user(approver, "approver")
    project = get_project(session, name, lock=True)
    _require_reviewer(project, approver)
    _require_status(project, (ProjectStatus.SUBMITTED,), "approved")
    if any(approval.approver == approver for approval in project.approvals):
        raise ValidationError(
            f"{approver!r} already approved {name!r}; another reviewer must approve"
        )

    project.approvals.append(ProjectApproval(approver=approver, comment=comment))
    required = required_approvals(session, project)
    if len(project.approvals) >= required:
        check_separation_of_duties(project)
        project.status = ProjectStatus.APPROVED
        project.approved_at = utcnow()
        project.approved_by = approver
    _record(
        session,
        audit,
        project,
        approver,
        "project.approve",
        source,
        approvals=len(project.approvals),
        required=required,
    )
    return project


def reject_project(
    session: Session,
    name: str,
    actor: str,
    *,
    audit: AuditLog,
    reason: str,
    source: str = "cli",
) -> Project:
    """Reject a submitted project; the reviewer must not be its PI or a member.

    Raises
    ------
    PermissionDenied
        If ``actor`` is the PI or a member.
    ValidationError
        If the project is not submitted or the reason is empty.
    """
    reason = _check_text(reason, "reason for the rejection")
    project = get_project(session, name, lock=True)
    _require_reviewer(project, actor)
    _require_status(project, (ProjectStatus.SUBMITTED,), "rejected")

    project.status = ProjectStatus.REJECTED
    project.ended_at = utcnow()
    project.end_reason = reason
    _record(session, audit, project, actor, "project.reject", source, reason=reason)
    return project


def terminate_project(
    session: Session,
    name: str,
    actor: str,
    *,
    audit: AuditLog,
    reason: str,
    source: str = "cli",
) -> Project:
    """End a project early and revoke its grants; its members lose access at once.

    Raises
    ------
    ValidationError
        If the project is already rejected, terminated or ended, or the
        reason is empty.
    """
    reason = _check_text(reason, "reason for the termination")
    project = get_project(session, name, lock=True)
    open_statuses = tuple(s for s in ProjectStatus if s not in CLOSED_STATUSES)
    _require_status(project, open_statuses, "terminated")

    now = utcnow()
    project.status = ProjectStatus.TERMINATED
    project.ended_at = now
    project.end_reason = reason
    for grant in project.grants:
        if grant.revoked_at is None:
            grant.revoked_at = now
    _record(session, audit, project, actor, "project.terminate", source, reason=reason)
    return project


def list_projects(
    session: Session, *, status: ProjectStatus | str | None = None
) -> list[Project]:
    """Return the projects, by name, optionally only those with ``status``."""
    query = (
        select(Project)
        .order_by(Project.name)
        .options(
            selectinload(Project.members),
            selectinload(Project.grants).selectinload(Grant.dataset),
            selectinload(Project.approvals),
        )
    )
    if status is not None:
        try:
            status = ProjectStatus(status)
        except ValueError:
            choices = ", ".join(s.value for s in ProjectStatus)
            raise ValidationError(
                f"invalid project status {status!r}; use one of {choices}"
            ) from None
        query = query.where(Project.status == status)
    return list(session.scalars(query))


def authorize_read(
    session: Session,
    username: str,
    dataset_name: str,
    today: dt.date | None = None,
    *,
    require_agreement: bool = True,
) -> tuple[Project, Dataset]:
    """Return the project through which ``username`` may read ``dataset_name``.

    The user must be a current member of a project that has an unrevoked
    grant of the dataset, is approved, and runs on ``today`` (its start and
    end dates included). The user must also have accepted the current
    version of the project's data use agreement.

    Parameters
    ----------
    session
        Open catalog session.
    username
        Hub user name of the reader.
    dataset_name
        Name of the dataset.
    today
        Date of the check; the local date by default.
    require_agreement
        False skips the data use agreement check, for callers that only ask
        whether the project itself allows access.

    Raises
    ------
    NotFound
        If there is no dataset ``dataset_name``.
    PermissionDenied
        If the user may not read it; the message gives the reason.
    """
    today = today or dt.date.today()
    dataset = session.scalars(
        select(Dataset).where(Dataset.name == dataset_name)
    ).one_or_none()
    if dataset is None:
        raise NotFound(f"dataset {dataset_name!r} not found")

    projects = list(
        session.scalars(
            select(Project)
            .join(ProjectMember)
            .where(
                ProjectMember.username == username, ProjectMember.removed_at.is_(None)
            )
            .order_by(Project.name)
            .options(selectinload(Project.grants))
        )
    )
    if not projects:
        raise PermissionDenied(f"user {username!r} is not a member of any project")
    granted = [
        (project, grant)
        for project in projects
        for grant in project.grants
        if grant.dataset_id == dataset.id
    ]
    if not granted:
        raise PermissionDenied(
            f"dataset {dataset_name!r} is not granted to any project of {username!r}"
        )

    # Imported here: the ethics package builds on this module.
    from enclave.ethics.acceptance import has_accepted_agreement

    reasons = []
    for project, grant in granted:
        reason = _denial_reason(project, grant, today)
        if reason is None and require_agreement:
            if not has_accepted_agreement(session, username, project):
                reason = (
                    f"user {username!r} has not accepted the current data use "
                    f"agreement of project {project.name!r}; accept it on the "
                    "ethics page of the hub (/services/ethics/) before reading data"
                )
        if reason is None:
            return project, dataset
        reasons.append(reason)
    raise PermissionDenied("; ".join(reasons))


def _denial_reason(project: Project, grant: Grant, today: dt.date) -> str | None:
    if project.status == ProjectStatus.TERMINATED:
        ended = project.ended_at.date().isoformat() if project.ended_at else "?"
        return f"project {project.name!r} was terminated on {ended}"
    if project.status == ProjectStatus.ENDED:
        return f"project {project.name!r} ended on {project.ends_on.isoformat()}"
    if grant.revoked_at is not None:
        return (
            f"the grant of this dataset to project {project.name!r} was revoked on "
            f"{grant.revoked_at.date().isoformat()}"
        )
    if project.status != ProjectStatus.APPROVED:
        return (
            f"project {project.name!r} is not approved (status {project.status.value})"
        )
    if today > project.ends_on:
        return f"project {project.name!r} ended on {project.ends_on.isoformat()}"
    if today < project.starts_on:
        return f"project {project.name!r} starts on {project.starts_on.isoformat()}"
    return None
