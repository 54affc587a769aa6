"""Concurrent committee decisions on one project change its state exactly once."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import func, select

from enclave import projects
from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import ProjectApproval, ProjectStatus
from enclave.errors import ValidationError
from enclave.ethics import workflow
from enclave.ethics.models import Review

from .conftest import make_application


def _run_together(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls in threads released together; return their results or errors."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - the test inspects every outcome
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def _decide(
    catalog: Catalog, audit: AuditLog, reviewer: str, decision: str, version: int
) -> Callable[[], ProjectStatus]:
    def call() -> ProjectStatus:
        with catalog.session(immediate=True) as session:
            project = workflow.review_application(
                session,
                audit,
                "gait-study",
                reviewer=reviewer,
                decision=decision,
                comment=f"decided by {reviewer}",
                expected_version=version,
            )
            return project.status

    return call


def _submitted(catalog: Catalog, audit: AuditLog, datasets: tuple[str, ...]) -> int:
    with catalog.session(immediate=True) as session:
        project = workflow.apply(
            session, audit, make_application(datasets=datasets), applicant="alice"
        )
        session.flush()
        return project.version


def test_concurrent_final_decisions_change_state_once(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    version = _submitted(ethics_catalog, ethics_audit, ("teaching-clips",))
    decisions = ["approve", "reject", "request_changes", "approve"]
    calls = [
        _decide(ethics_catalog, ethics_audit, f"rev-{i}", decision, version)
        for i, decision in enumerate(decisions)
    ]

    results = _run_together(calls)

    won = [r for r in results if isinstance(r, ProjectStatus)]
    lost = [r for r in results if isinstance(r, workflow.DecisionConflict)]
    assert len(won) == 1, results
    assert len(lost) == len(decisions) - 1, results
    with ethics_catalog.session() as session:
        project = projects.get_project(session, "gait-study")
        assert project.status is won[0]
        assert project.version == version + 1
        assert session.scalar(select(func.count()).select_from(Review)) == 1
    state_changes = [
        e
        for e in ethics_audit.events()
        if e.action in ("project.approve", "project.reject", "project.request_changes")
    ]
    assert len(state_changes) == 1
    assert ethics_audit.verify().ok


def test_concurrent_approvals_count_every_vote(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    # Level 3 needs two approvals: of three simultaneous approvals, two are
    # counted, the project is approved once, and the third comes too late.
    version = _submitted(ethics_catalog, ethics_audit, ("ward-clips",))
    calls = [
        _decide(ethics_catalog, ethics_audit, f"rev-{i}", "approve", version)
        for i in range(3)
    ]

    results = _run_together(calls)

    assert sum(isinstance(r, ProjectStatus) for r in results) == 2, results
    assert sum(isinstance(r, workflow.DecisionConflict) for r in results) == 1, results
    with ethics_catalog.session() as session:
        project = projects.get_project(session, "gait-study")
        assert project.status is ProjectStatus.APPROVED
        assert session.scalar(select(func.count()).select_from(ProjectApproval)) == 2
    approved = [
        e
        for e in ethics_audit.events(action="project.approve")
        if e.detail["status"] == "approved"
    ]
    assert len(approved) == 1
    assert ethics_audit.verify().ok


def test_concurrent_suspend_and_terminate(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _submitted(ethics_catalog, ethics_audit, ("teaching-clips",))
    with ethics_catalog.session(immediate=True) as session:
        workflow.review_application(
            session, ethics_audit, "gait-study", reviewer="rev-li", decision="approve"
        )

    def act(function: Callable[..., object]) -> Callable[[], object]:
        def call() -> object:
            with ethics_catalog.session(immediate=True) as session:
                return function(
                    session, ethics_audit, "gait-study", actor="sec", reason="alert"
                ).status

        return call

    results = _run_together(
        [act(workflow.suspend), act(workflow.suspend), act(workflow.terminate)]
    )

    errors = [r for r in results if isinstance(r, Exception)]
    assert all(
        isinstance(e, workflow.DecisionConflict | ValidationError) for e in errors
    ), results
    with ethics_catalog.session() as session:
        status = projects.get_project(session, "gait-study").status
    assert status in (ProjectStatus.SUSPENDED, ProjectStatus.TERMINATED)
    assert len(ethics_audit.events(action="project.suspend")) <= 1
    assert ethics_audit.verify().ok
