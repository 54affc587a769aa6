"""Applications: a researcher applies, the committee reviews, the applicant resubmits.

One request for changes or one rejection ends a review round. Approval needs
the highest ``LevelRule.min_approvals`` among the levels of the project's
datasets. The approvals are recorded by
:func:`enclave.projects.approve_project`. After changes are requested the
applicant edits and resubmits, which starts a new round in which earlier
votes no longer count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from enclave import projects
from enclave.catalog.models import (
    Grant,
    Project,
    ProjectApproval,
    ProjectMember,
    ProjectStatus,
    utcnow,
)
from enclave.ethics.forms import USE_SCENES, Application, FieldError, FormInvalid
from enclave.ethics.models import EthicsApplication, ReviewDecision
from enclave.ethics.review import (
    APPLICATION,
    SOURCE,
    DecisionConflict,
    check_decision,
    check_reviewer,
    datasets_by_name,
    deny,
    lock_project,
    record_vote,
    round_conditions,
)

if TYPE_CHECKING:
    from enclave.audit import AuditLog

__all__ = ["application_of", "apply", "resubmit", "review_application"]

log = logging.getLogger(__name__)


def _application_errors(
    session: Session, application: Application, *, new: bool
) -> list[FieldError]:
    errors = []
    if (
        new
        and session.scalars(
            select(Project.id).where(Project.name == application.name)
        ).first()
    ):
        errors.append(
            FieldError(
                "name",
                "Project name %(value)r is already taken; choose another name.",
                {"value": application.name},
            )
        )
    found = datasets_by_name(session, application.datasets)
    for name in application.datasets:
        if name not in found:
            errors.append(
                FieldError(
                    "datasets",
                    "Dataset %(value)r does not exist; choose from the published "
                    "datasets.",
                    {"value": name},
                )
            )
    if application.use_scene not in USE_SCENES:
        errors.append(
            FieldError(
                "use_scene",
                "%(label)s %(value)r is not known; choose one of: %(choices)s.",
                {"value": application.use_scene, "choices": ", ".join(USE_SCENES)},
            )
        )
    if application.ends_on <= application.starts_on:
        errors.append(
            FieldError(
                "ends_on",
                "End date %(value)s is not after the start date %(start)s; choose a "
                "later end date.",
                {
                    "value": application.ends_on.isoformat(),
                    "start": application.starts_on.isoformat(),
                },
            )
        )
    return errors


def apply(
    session: Session, audit: AuditLog, application: Application, *, applicant: str
) -> Project:
    """Create a project from an application and submit it to the committee.

    The principal investigator becomes a member; the applicant is a member
    only if the application lists them.

    Raises
    ------
    FormInvalid
        If the name is taken, a dataset does not exist or the dates are
        inconsistent; nothing is stored.
    AuditUnavailable
        If the decision cannot be recorded; nothing is stored.
    """
    errors = _application_errors(session, application, new=True)
    if errors:
        raise FormInvalid(errors)

    project = projects.create_project(
        session,
        name=application.name,
        title=application.title,
        purpose=application.use_scene,
        pi=application.principal_investigator,
        members=application.members,
        datasets=application.datasets,
        starts_on=application.starts_on,
        ends_on=application.ends_on,
        created_by=applicant,
        audit=audit,
        deid_profile=application.deid_profile,
        ethics_ref=application.ethics_ref,
        consent_basis=application.consent_basis,
        source=SOURCE,
    )
    session.add(
        EthicsApplication(
            project=project, summary=application.summary, submitted_by=applicant
        )
    )
    session.flush()
    projects.submit_project(
        session, project.name, applicant, audit=audit, source=SOURCE
    )
    return project


def application_of(session: Session, project: Project) -> EthicsApplication:
    """Return the ethics record of ``project``; create it for a project made elsewhere.

    Projects created with ``enclave project create`` have no record yet.
    """
    record = session.get(EthicsApplication, project.id)
    if record is None:
        record = EthicsApplication(
            project=project,
            submitted_by=project.created_by,
            submitted_at=project.created_at or utcnow(),
        )
        session.add(record)
        session.flush()
    return record


def resubmit(
    session: Session,
    audit: AuditLog,
    name: str,
    application: Application,
    *,
    applicant: str,
    expected_version: int | None = None,
) -> Project:
    """Replace an application the committee asked to change, and submit it again.

    Starts a new review round: votes of earlier rounds no longer count.

    Raises
    ------
    PermissionDenied
        If ``applicant`` is neither the original applicant nor the PI.
    ValidationError
        If the project is not waiting for changes, or a field is invalid.
    """
    project = lock_project(session, name, expected_version=expected_version)
    if applicant not in (project.created_by, project.principal_investigator):
        raise deny(
            session,
            audit,
            actor=applicant,
            action="project.submit",
            project=name,
            reason=(
                f"{applicant!r} may not change project {name!r}; only its applicant "
                f"{project.created_by!r} or principal investigator "
                f"{project.principal_investigator!r} may"
            ),
        )
    if project.status != ProjectStatus.CHANGES_REQUESTED:
        raise DecisionConflict(
            f"project {name!r} is {project.status.value}; only a project with "
            "changes requested can be changed and resubmitted"
        )
    errors = _application_errors(session, replace(application, name=name), new=False)
    if errors:
        raise FormInvalid(errors)

    project.title = application.title
    project.purpose = application.use_scene
    project.principal_investigator = application.principal_investigator
    project.deid_profile = application.deid_profile
    project.starts_on = application.starts_on
    project.ends_on = application.ends_on
    project.ethics_ref = application.ethics_ref
    project.consent_basis = application.consent_basis
    _replace_members(session, project, application)
    _replace_grants(session, project, application.datasets, granted_by=applicant)

    record = application_of(session, project)
    record.summary = application.summary
    record.review_round += 1
    record.submitted_at = utcnow()
    record.submitted_by = applicant
    session.flush()
    projects.submit_project(session, name, applicant, audit=audit, source=SOURCE)
    return project


def _replace_members(
    session: Session, project: Project, application: Application
) -> None:
    # Before approval nobody has had access, so members are replaced outright.
    wanted = {application.principal_investigator: "pi"}
    for username in application.members:
        wanted.setdefault(username, "member")
    for member in list(project.members):
        if member.username not in wanted:
            project.members.remove(member)
            session.delete(member)
        else:
            member.role = wanted.pop(member.username)
            member.removed_at = None
    for username, role in wanted.items():
        project.members.append(ProjectMember(username=username, role=role))


def _replace_grants(
    session: Session, project: Project, dataset_names: Iterable[str], *, granted_by: str
) -> None:
    wanted = datasets_by_name(session, dataset_names)
    for grant in list(project.grants):
        if grant.dataset.name not in wanted:
            project.grants.remove(grant)
            session.delete(grant)
        else:
            wanted.pop(grant.dataset.name)
    for dataset in wanted.values():
        project.grants.append(Grant(dataset=dataset, granted_by=granted_by))


def review_application(
    session: Session,
    audit: AuditLog,
    name: str,
    *,
    reviewer: str,
    decision: ReviewDecision | str,
    conditions: str = "",
    comment: str = "",
    expected_version: int | None = None,
) -> Project:
    """Record one committee member's decision on a submitted application.

    ``approve`` and ``approve_with_conditions`` count towards the approvals
    the project needs; once there are enough, the project is approved with
    the conditions of every approving vote. ``request_changes`` and
    ``reject`` take effect at once and need a comment.

    Raises
    ------
    PermissionDenied
        If ``reviewer`` applied for the project, is its PI or a member.
    DecisionConflict
        If the project is no longer waiting for review or changed since
        ``expected_version``.
    ValidationError
        If the decision is unknown, a needed comment or condition is
        missing, or the reviewer already voted in this round.
    """
    decision = check_decision(decision, conditions, comment)
    project = lock_project(session, name, expected_version=expected_version)
    check_reviewer(session, audit, project, reviewer, f"project.{decision.value}")
    if project.status != ProjectStatus.SUBMITTED:
        raise DecisionConflict(
            f"project {name!r} is {project.status.value}, not waiting for review; "
            "reload the page to see the decision"
        )
    record = application_of(session, project)
    record_vote(
        session,
        project,
        APPLICATION,
        record.review_round,
        reviewer,
        decision,
        conditions,
        comment,
    )

    if decision is ReviewDecision.REJECT:
        projects.reject_project(
            session, name, reviewer, audit=audit, reason=comment, source=SOURCE
        )
    elif decision is ReviewDecision.REQUEST_CHANGES:
        _request_changes(session, audit, project, reviewer, comment)
    else:
        projects.approve_project(
            session,
            name,
            reviewer,
            audit=audit,
            comment=(conditions or comment or None),
            source=SOURCE,
        )
        if project.status == ProjectStatus.APPROVED:
            record.conditions = round_conditions(
                session, project, APPLICATION, record.review_round
            )
    session.flush()
    return project


def _request_changes(
    session: Session, audit: AuditLog, project: Project, reviewer: str, comment: str
) -> None:
    project.status = ProjectStatus.CHANGES_REQUESTED
    # Approvals of this round lapse: the changed application is reviewed anew.
    session.execute(
        delete(ProjectApproval).where(ProjectApproval.project_id == project.id)
    )
    session.expire(project, ["approvals"])
    audit.append(
        actor=reviewer,
        action="project.request_changes",
        outcome="success",
        source=SOURCE,
        project=project.name,
        detail={"status": project.status.value, "reason": comment},
        session=session,
    )
    log.info("project %s: changes requested by %s", project.name, reviewer)
