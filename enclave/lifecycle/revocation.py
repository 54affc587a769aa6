"""Revocation of a project's access at its end date, on termination and on suspension.

A sweep (:func:`run_revocation`) runs every 30 seconds in the ethics service
and on demand with ``enclave ethics revoke-expired``. It

1. marks approved and suspended projects whose end date has passed as ended;
2. records an :class:`~enclave.ethics.models.AccessClosure` for every ended,
   terminated or suspended project that lacks one. The closure leaves each
   member a notice saying why access ended and records an ``access.revoke``
   audit event. It also destroys the project's working copies by key
   destruction, on suspension too, so a resumed project starts without them;
3. in the hub, removes the members from the project's group, stops their
   servers and revokes their API and OAuth tokens, retrying on the next
   sweep until the hub accepts every call;
4. adds the members of running approved projects to their project's group.

The broker needs none of this to refuse data: ``enclave.projects.authorize_read``
reads the project's status and end date on every request. The sweep removes
what a member may still hold: a running kernel and tokens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave.catalog.models import Grant, Project, ProjectStatus, utcnow
from enclave.ethics.models import (
    AccessClosure,
    AccessNotice,
    ClosureCause,
    WorkingCopy,
)
from enclave.lifecycle.hub_client import HubApiError, HubClient, project_group
from enclave.lifecycle.working_copies import destroy_working_copies

if TYPE_CHECKING:
    from enclave.audit import AuditLog
    from enclave.catalog.db import Catalog

__all__ = [
    "SWEEP_INTERVAL_S",
    "RevocationReport",
    "close_access",
    "end_expired_projects",
    "project_groups_of",
    "record_missing_closures",
    "reopen_access",
    "run_revocation",
    "running_project_members",
]

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 30
"""Seconds between sweeps of the ethics service; access ends within two sweeps."""

SERVICE_ACTOR = "enclave-ethics"
"""Actor of the audit events that the sweep records on its own."""

FAILURE_AUDIT_EVERY = 10
"""A failing hub revocation is audited on its 1st, 11th, 21st, ... attempt."""

_CAUSE_OF_STATUS = {
    ProjectStatus.ENDED: ClosureCause.ENDED,
    ProjectStatus.TERMINATED: ClosureCause.TERMINATED,
    ProjectStatus.SUSPENDED: ClosureCause.SUSPENDED,
}


@dataclass
class RevocationReport:
    """Summary of one sweep."""

    ended: list[str] = field(default_factory=list)
    """Projects marked as ended because their end date passed."""
    closed: list[str] = field(default_factory=list)
    """Projects whose access was closed in this sweep."""
    revoked: list[tuple[str, str]] = field(default_factory=list)
    """(project, user) pairs revoked in the hub."""
    pending: list[str] = field(default_factory=list)
    """Projects whose hub revocation is still to be done or failed."""
    granted: list[tuple[str, str]] = field(default_factory=list)
    """(project, user) pairs added to a project's hub group."""
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Describe the sweep in lines for the command line."""
        lines = [f"ended: {name}" for name in self.ended]
        lines += [f"closed: {name}" for name in self.closed]
        lines += [f"revoked: {user} from {name}" for name, user in self.revoked]
        lines += [f"granted: {user} in {name}" for name, user in self.granted]
        lines += [f"pending in the hub: {name}" for name in self.pending]
        lines += [f"error: {error}" for error in self.errors]
        return lines or ["nothing to revoke"]


def _members(project: Project) -> list[str]:
    names = {m.username for m in project.members if m.removed_at is None}
    names.add(project.principal_investigator)
    return sorted(names)


def close_access(
    session: Session,
    audit: AuditLog,
    project: Project,
    *,
    cause: ClosureCause,
    reason: str,
    actor: str,
) -> AccessClosure:
    """Record the end of a project's access in the session's transaction.

    Leaves a notice for every member, destroys the working copies by key
    destruction whatever the cause, and records an ``access.revoke`` audit
    event that lists the destroyed assets. The hub steps follow in the next
    sweep.
    """
    members = _members(project)
    closure = AccessClosure(
        project_id=project.id,
        cause=cause,
        reason=reason,
        created_by=actor,
        members=members,
    )
    session.add(closure)
    for username in members:
        session.add(
            AccessNotice(
                username=username, project_id=project.id, cause=cause, reason=reason
            )
        )

    # A suspension destroys the working copies too, because it ends access to
    # the project's data just as the end date does. Resuming does not bring
    # them back.
    destroyed = destroy_working_copies(
        session,
        audit,
        project,
        actor=actor,
        reason=f"project {cause.value}: {reason}",
    )
    session.flush()
    audit.append(
        actor=actor,
        action="access.revoke",
        outcome="success",
        source="ethics",
        project=project.name,
        target=f"closure:{closure.id}",
        detail={
            "cause": cause.value,
            "reason": reason,
            "members": members,
            "working_copies_destroyed": destroyed,
            "hub": "pending",
        },
        session=session,
    )
    log.info("access to project %s closed (%s)", project.name, cause.value)
    return closure


def reopen_access(session: Session, project: Project) -> list[str]:
    """Mark the open suspensions of ``project`` as lifted and dismiss their notices.

    A suspension whose hub revocation is still pending is not revoked
    afterwards, so resuming a project never logs its members out. Working
    copies destroyed at the suspension stay destroyed.

    Returns
    -------
    list of str
        Ids of the project's destroyed working copies, for the record of
        the resumption.
    """
    now = utcnow()
    for closure in session.scalars(
        select(AccessClosure).where(
            AccessClosure.project_id == project.id,
            AccessClosure.cause == ClosureCause.SUSPENDED,
            AccessClosure.reopened_at.is_(None),
        )
    ):
        closure.reopened_at = now
    for notice in session.scalars(
        select(AccessNotice).where(
            AccessNotice.project_id == project.id,
            AccessNotice.cause == ClosureCause.SUSPENDED,
            AccessNotice.dismissed_at.is_(None),
        )
    ):
        notice.dismissed_at = now
    return list(
        session.scalars(
            select(WorkingCopy.asset_id)
            .where(
                WorkingCopy.project_id == project.id,
                WorkingCopy.destroyed_at.is_not(None),
            )
            .order_by(WorkingCopy.asset_id)
        )
    )


def end_expired_projects(
    session: Session, audit: AuditLog, *, today: dt.date, actor: str = SERVICE_ACTOR
) -> list[str]:
    """Mark approved and suspended projects whose end date is before ``today`` as ended.

    Grants are revoked and access closed in the session's transaction.
    """
    expired = list(
        session.scalars(
            select(Project)
            .where(
                Project.status.in_([ProjectStatus.APPROVED, ProjectStatus.SUSPENDED]),
                Project.ends_on < today,
            )
            .order_by(Project.name)
            .with_for_update()
        )
    )
    names = []
    for project in expired:
        now = utcnow()
        reason = f"the project's end date {project.ends_on.isoformat()} has passed"
        project.status = ProjectStatus.ENDED
        project.ended_at = now
        project.end_reason = reason
        for grant in session.scalars(
            select(Grant).where(Grant.project_id == project.id)
        ):
            grant.revoked_at = grant.revoked_at or now
        audit.append(
            actor=actor,
            action="project.end",
            outcome="success",
            source="ethics",
            project=project.name,
            detail={"status": project.status.value, "reason": reason},
            session=session,
        )
        close_access(
            session,
            audit,
            project,
            cause=ClosureCause.ENDED,
            reason=reason,
            actor=actor,
        )
        names.append(project.name)
    return names


def record_missing_closures(
    session: Session, audit: AuditLog, *, actor: str = SERVICE_ACTOR
) -> list[str]:
    """Close access of projects ended, terminated or suspended without a closure.

    This covers projects stopped outside the ethics service, for example
    with ``enclave project terminate``. Projects that were never approved
    had no access and are skipped.
    """
    names = []
    candidates = session.scalars(
        select(Project)
        .where(
            Project.status.in_(list(_CAUSE_OF_STATUS)),
            Project.approved_at.is_not(None),
        )
        .order_by(Project.name)
    )
    for project in candidates:
        cause = _CAUSE_OF_STATUS[project.status]
        exists = session.scalars(
            select(AccessClosure.id).where(
                AccessClosure.project_id == project.id,
                AccessClosure.cause == cause,
                AccessClosure.reopened_at.is_(None),
            )
        ).first()
        if exists is None:
            reason = project.end_reason or f"the project was {cause.value}"
            close_access(
                session, audit, project, cause=cause, reason=reason, actor=actor
            )
            names.append(project.name)
    return names


async def _revoke_closure_in_hub(
    hub: HubClient, project_name: str, members: list[str]
) -> dict:
    group = project_group(project_name)
    in_group = await hub.group_members(group) or set()
    stopped: dict[str, list[str]] = {}
    tokens: dict[str, int] = {}
    for username in sorted(set(members) | in_group):
        await hub.remove_from_group(group, username)
        stopped[username] = await hub.stop_servers(username)
        tokens[username] = await hub.revoke_tokens(username)
    return {"servers_stopped": stopped, "tokens_revoked": tokens}


async def _revoke_pending(
    catalog: Catalog, audit: AuditLog, hub: HubClient, report: RevocationReport
) -> None:
    with catalog.session() as session:
        pending = [
            (
                closure.id,
                closure.project.name,
                list(closure.members),
                closure.cause.value,
            )
            for closure in session.scalars(
                select(AccessClosure)
                .where(
                    AccessClosure.hub_revoked_at.is_(None),
                    AccessClosure.reopened_at.is_(None),
                )
                .order_by(AccessClosure.id)
            )
        ]

    for closure_id, project_name, members, cause in pending:
        try:
            result = await _revoke_closure_in_hub(hub, project_name, members)
        except HubApiError as exc:
            _record_hub_failure(catalog, audit, closure_id, project_name, exc)
            report.pending.append(project_name)
            report.errors.append(f"{project_name}: {exc}")
            continue

        with catalog.session(immediate=True) as session:
            closure = session.get(AccessClosure, closure_id)
            assert closure is not None
            closure.hub_revoked_at = utcnow()
            closure.attempts += 1
            closure.last_error = None
            audit.append(
                actor=SERVICE_ACTOR,
                action="access.revoke",
                outcome="success",
                source="ethics",
                project=project_name,
                target=f"closure:{closure_id}",
                detail={"cause": cause, "members": members, "hub": "done", **result},
                session=session,
            )
        report.revoked.extend((project_name, user) for user in members)
        log.info(
            "revoked hub access of %d members of project %s", len(members), project_name
        )


def _record_hub_failure(
    catalog: Catalog,
    audit: AuditLog,
    closure_id: int,
    project_name: str,
    exc: Exception,
) -> None:
    with catalog.session(immediate=True) as session:
        closure = session.get(AccessClosure, closure_id)
        assert closure is not None
        closure.attempts += 1
        closure.last_error = str(exc)
        attempts = closure.attempts
        if attempts % FAILURE_AUDIT_EVERY == 1:
            audit.append(
                actor=SERVICE_ACTOR,
                action="access.revoke",
                outcome="failure",
                source="ethics",
                project=project_name,
                target=f"closure:{closure_id}",
                detail={"hub": "failed", "error": str(exc), "attempts": attempts},
                session=session,
            )
    if attempts % FAILURE_AUDIT_EVERY == 1:
        log.error(
            "revoking hub access of project %s failed (attempt %d): %s",
            project_name,
            attempts,
            exc,
        )


def running_project_members(session: Session, today: dt.date) -> dict[str, list[str]]:
    """Return the members of each approved project that runs on ``today``, by name.

    Members are the principal investigator and the members not removed.
    Ended, terminated, suspended and not yet approved projects are left out.
    """
    return {
        project.name: _members(project)
        for project in session.scalars(
            select(Project)
            .where(
                Project.status == ProjectStatus.APPROVED,
                Project.starts_on <= today,
                Project.ends_on >= today,
            )
            .order_by(Project.name)
        )
    }


def project_groups_of(
    session: Session, username: str, today: dt.date | None = None
) -> list[str]:
    """Return the hub groups ``project-<name>`` that ``username`` should be in.

    These are the groups the sweep grants: one per approved project running
    on ``today`` (the local date by default) that has ``username`` as member.
    """
    today = today or dt.date.today()
    return sorted(
        project_group(name)
        for name, members in running_project_members(session, today).items()
        if username in members
    )


async def _grant_running_projects(
    catalog: Catalog, hub: HubClient, today: dt.date, report: RevocationReport
) -> None:
    with catalog.session() as session:
        running = running_project_members(session, today)
    for name, members in running.items():
        group = project_group(name)
        try:
            await hub.ensure_group(group)
            in_group = await hub.group_members(group) or set()
            for username in sorted(set(members) - in_group):
                if await hub.add_to_group(group, username):
                    report.granted.append((name, username))
            for username in sorted(in_group - set(members)):
                await hub.remove_from_group(group, username)
        except HubApiError as exc:
            report.errors.append(f"{name}: {exc}")
            log.warning("cannot update hub group %s: %s", group, exc)


async def run_revocation(
    catalog: Catalog,
    audit: AuditLog,
    hub: HubClient | None,
    *,
    today: dt.date | None = None,
    actor: str = SERVICE_ACTOR,
) -> RevocationReport:
    """Run one sweep: end expired projects, close access, revoke and grant in the hub.

    Parameters
    ----------
    hub
        Client of the hub's REST API, or None to do only the catalog steps
        (the hub steps then wait for a sweep that has a client).
    today
        Date of the end-date check; the local date by default, as in
        ``enclave.projects.authorize_read``.
    """
    today = today or dt.date.today()
    report = RevocationReport()
    with catalog.session(immediate=True) as session:
        report.ended = end_expired_projects(session, audit, today=today, actor=actor)
        report.closed = report.ended + record_missing_closures(
            session, audit, actor=actor
        )

    if hub is None:
        with catalog.session() as session:
            report.pending = sorted(
                {
                    closure.project.name
                    for closure in session.scalars(
                        select(AccessClosure).where(
                            AccessClosure.hub_revoked_at.is_(None),
                            AccessClosure.reopened_at.is_(None),
                        )
                    )
                }
            )
        return report
    await _revoke_pending(catalog, audit, hub, report)
    await _grant_running_projects(catalog, hub, today, report)
    return report


class RevocationLoop:
    """Runs :func:`run_revocation` every :data:`SWEEP_INTERVAL_S` seconds in a service.

    Parameters
    ----------
    run
        Coroutine function that runs one sweep.
    interval
        Seconds between the start of one sweep and the next.
    """

    def __init__(
        self, run: Callable[[], object], interval: float = SWEEP_INTERVAL_S
    ) -> None:
        self._run = run
        self.interval = interval
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def trigger(self) -> None:
        """Run the next sweep now, e.g. right after a termination."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                await self._run()  # type: ignore[misc]
            except Exception:
                # The sweep must survive a broken database connection or a
                # bug in one project's data; the next sweep retries.
                log.exception("revocation sweep failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
