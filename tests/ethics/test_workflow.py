"""The ethics workflow on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from enclave import projects
from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import LevelRule, Project, ProjectStatus
from enclave.errors import PermissionDenied, ValidationError
from enclave.ethics import workflow
from enclave.ethics.forms import AmendmentRequest, FormInvalid
from enclave.ethics.models import (
    AccessClosure,
    AccessNotice,
    EthicsApplication,
    Review,
)

from .conftest import TODAY, make_application


def _apply(catalog: Catalog, audit: AuditLog, **changes: object) -> None:
    with catalog.session(immediate=True) as session:
        workflow.apply(session, audit, make_application(**changes), applicant="alice")


def _review(
    catalog: Catalog, audit: AuditLog, reviewer: str, decision: str, **kwargs: object
) -> Project:
    name = str(kwargs.pop("name", "gait-study"))
    with catalog.session(immediate=True) as session:
        return workflow.review_application(
            session, audit, name, reviewer=reviewer, decision=decision, **kwargs
        )


def _status(catalog: Catalog, name: str = "gait-study") -> ProjectStatus:
    with catalog.session() as session:
        return projects.get_project(session, name).status


def _actions(audit: AuditLog) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.outcome) for e in audit.events()]


def _approve(catalog: Catalog, audit: AuditLog) -> None:
    _review(catalog, audit, "rev-li", "approve")
    _review(catalog, audit, "rev-zhao", "approve")


def _submit_member_amendment(
    catalog: Catalog, audit: AuditLog, member: str, reason: str
) -> int:
    """Approve the project and return the id of alice's amendment adding ``member``."""
    _apply(catalog, audit)
    _approve(catalog, audit)
    with catalog.session(immediate=True) as session:
        return workflow.submit_amendment(
            session,
            audit,
            "gait-study",
            AmendmentRequest(add_members=(member,), reason=reason),
            requested_by="alice",
        ).id


def test_apply_submits_the_project(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit)

    with ethics_catalog.session() as session:
        project = projects.get_project(session, "gait-study")
        record = session.get(EthicsApplication, project.id)
        members = {m.username: m.role for m in project.members}
        assert project.status is ProjectStatus.SUBMITTED
        assert project.purpose == "research"
        assert record is not None
        assert record.review_round == 1
        assert record.submitted_by == "alice"
        assert members == {"pi-wang": "pi", "alice": "member"}
    assert _actions(ethics_audit) == [
        ("alice", "project.create", "success"),
        ("alice", "project.submit", "success"),
    ]


def test_apply_rejects_taken_name_and_stores_nothing(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit)

    with pytest.raises(FormInvalid, match="'gait-study' is already taken") as info:
        _apply(ethics_catalog, ethics_audit, datasets=("ward-clips", "no-such-set"))

    assert {e.field for e in info.value.errors} == {"name", "datasets"}
    with ethics_catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Project)) == 1
    assert len(ethics_audit.events()) == 2


def test_level_3_needs_two_approvals(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit)

    first = _review(ethics_catalog, ethics_audit, "rev-li", "approve")
    assert first.status is ProjectStatus.SUBMITTED
    second = _review(ethics_catalog, ethics_audit, "rev-zhao", "approve")

    assert second.status is ProjectStatus.APPROVED
    assert ethics_audit.verify().ok


def test_level_2_needs_one_approval(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit, datasets=("teaching-clips",))

    project = _review(ethics_catalog, ethics_audit, "rev-li", "approve")

    assert project.status is ProjectStatus.APPROVED


def test_min_approvals_is_configurable(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    with ethics_catalog.session() as session:
        session.get(LevelRule, 3).min_approvals = 3  # type: ignore[union-attr]
    _apply(ethics_catalog, ethics_audit)

    _approve(ethics_catalog, ethics_audit)
    assert _status(ethics_catalog) is ProjectStatus.SUBMITTED
    _review(ethics_catalog, ethics_audit, "rev-sun", "approve")

    assert _status(ethics_catalog) is ProjectStatus.APPROVED


@pytest.mark.parametrize(
    ("reviewer", "why"),
    [("alice", "applied for"), ("pi-wang", "is a member"), ("bob", "is a member")],
)
def test_own_project_vote_refused(
    ethics_catalog: Catalog, ethics_audit: AuditLog, reviewer: str, why: str
) -> None:
    _apply(ethics_catalog, ethics_audit, members=("alice", "bob"), name="own-vote")
    if reviewer == "alice":
        # The applicant is refused even when not a member.
        _apply(ethics_catalog, ethics_audit, members=("bob",), name="own-vote-2")

    name = "own-vote-2" if reviewer == "alice" else "own-vote"
    with pytest.raises(PermissionDenied, match=why):
        _review(ethics_catalog, ethics_audit, reviewer, "approve", name=name)

    with ethics_catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 0
    last = ethics_audit.events()[-1]
    assert (last.actor, last.action, last.outcome) == (
        reviewer,
        "project.approve",
        "denied",
    )
    assert _status(ethics_catalog, name) is ProjectStatus.SUBMITTED


def test_second_vote_in_round_refused(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit)
    _review(ethics_catalog, ethics_audit, "rev-li", "approve")

    with pytest.raises(ValidationError, match="already decided"):
        _review(ethics_catalog, ethics_audit, "rev-li", "approve")


def test_conditions_are_required_and_kept(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit)

    with pytest.raises(ValidationError, match="conditions of the approval is missing"):
        _review(ethics_catalog, ethics_audit, "rev-li", "approve_with_conditions")
    _review(
        ethics_catalog,
        ethics_audit,
        "rev-li",
        "approve_with_conditions",
        conditions="Report every incidental finding.",
    )
    _review(ethics_catalog, ethics_audit, "rev-zhao", "approve")

    with ethics_catalog.session() as session:
        project = projects.get_project(session, "gait-study")
        record = session.get(EthicsApplication, project.id)
        assert project.status is ProjectStatus.APPROVED
        assert record is not None
        assert record.conditions == "Report every incidental finding."


def test_reject_needs_comment(ethics_catalog: Catalog, ethics_audit: AuditLog) -> None:
    _apply(ethics_catalog, ethics_audit)

    with pytest.raises(ValidationError, match="comment explaining the decision"):
        _review(ethics_catalog, ethics_audit, "rev-li", "reject")
    project = _review(
        ethics_catalog, ethics_audit, "rev-li", "reject", comment="No consent basis."
    )

    assert project.status is ProjectStatus.REJECTED
    assert ("rev-li", "project.reject", "success") in _actions(ethics_audit)


def test_changes_requested_start_new_round(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit)
    _review(ethics_catalog, ethics_audit, "rev-li", "approve")
    _review(
        ethics_catalog,
        ethics_audit,
        "rev-zhao",
        "request_changes",
        comment="Shorten the period.",
    )
    assert _status(ethics_catalog) is ProjectStatus.CHANGES_REQUESTED

    with ethics_catalog.session(immediate=True) as session:
        workflow.resubmit(
            session,
            ethics_audit,
            "gait-study",
            make_application(
                ends_on=TODAY + dt.timedelta(days=30), members=("alice", "carol")
            ),
            applicant="alice",
        )
    # The approval of the first round lapsed: one approval is not enough.
    first = _review(ethics_catalog, ethics_audit, "rev-li", "approve")
    assert first.status is ProjectStatus.SUBMITTED
    second = _review(ethics_catalog, ethics_audit, "rev-zhao", "approve")

    assert second.status is ProjectStatus.APPROVED
    with ethics_catalog.session() as session:
        project = projects.get_project(session, "gait-study")
        assert project.ends_on == TODAY + dt.timedelta(days=30)
        assert {m.username for m in project.members} == {"pi-wang", "alice", "carol"}
        assert session.get(EthicsApplication, project.id).review_round == 2  # type: ignore[union-attr]


def test_stale_version_conflicts(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit, datasets=("teaching-clips",))
    with ethics_catalog.session() as session:
        version = projects.get_project(session, "gait-study").version
    _review(ethics_catalog, ethics_audit, "rev-li", "approve", expected_version=version)

    with pytest.raises(workflow.DecisionConflict, match="reload the page"):
        _review(
            ethics_catalog,
            ethics_audit,
            "rev-zhao",
            "reject",
            comment="late",
            expected_version=version,
        )
    assert _status(ethics_catalog) is ProjectStatus.APPROVED


def test_amendment_keeps_approved_scope_until_approved(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit)
    _approve(ethics_catalog, ethics_audit)
    new_end = TODAY + dt.timedelta(days=200)
    with ethics_catalog.session(immediate=True) as session:
        amendment = workflow.submit_amendment(
            session,
            ethics_audit,
            "gait-study",
            AmendmentRequest(
                add_members=("dave",),
                add_datasets=("icu-level4",),
                new_ends_on=new_end,
                reason="A second ward joins.",
            ),
            requested_by="alice",
        )
        amendment_id = amendment.id

    with ethics_catalog.session() as session:
        assert projects.authorize_read(
            session, "alice", "ward-clips", require_agreement=False
        )
        with pytest.raises(PermissionDenied):
            projects.authorize_read(session, "dave", "ward-clips")
        with pytest.raises(PermissionDenied):
            projects.authorize_read(session, "alice", "icu-level4")

    # Level 4 needs the approvals its rule sets: two by default.
    for reviewer in ("rev-li", "rev-zhao"):
        with ethics_catalog.session(immediate=True) as session:
            result = workflow.review_amendment(
                session,
                ethics_audit,
                "gait-study",
                amendment_id,
                reviewer=reviewer,
                decision="approve",
            )
            status = result.status
    assert status.value == "approved"

    with ethics_catalog.session() as session:
        project = projects.get_project(session, "gait-study")
        assert project.status is ProjectStatus.APPROVED
        assert project.ends_on == new_end
        assert projects.authorize_read(
            session, "dave", "icu-level4", require_agreement=False
        )


def test_amendment_by_non_member_refused(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit)
    _approve(ethics_catalog, ethics_audit)

    with pytest.raises(PermissionDenied, match="not a member"):
        with ethics_catalog.session(immediate=True) as session:
            workflow.submit_amendment(
                session,
                ethics_audit,
                "gait-study",
                AmendmentRequest(add_members=("mallory",), reason="let me in"),
                requested_by="mallory",
            )
    assert _actions(ethics_audit)[-1] == ("mallory", "amendment.submit", "denied")


def test_new_member_cannot_review_own_admission(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    amendment_id = _submit_member_amendment(
        ethics_catalog, ethics_audit, "rev-sun", "statistician"
    )

    with pytest.raises(PermissionDenied, match="named in this amendment"):
        with ethics_catalog.session(immediate=True) as session:
            workflow.review_amendment(
                session,
                ethics_audit,
                "gait-study",
                amendment_id,
                reviewer="rev-sun",
                decision="approve",
            )


def test_suspend_and_resume(ethics_catalog: Catalog, ethics_audit: AuditLog) -> None:
    _apply(ethics_catalog, ethics_audit)
    _approve(ethics_catalog, ethics_audit)

    with ethics_catalog.session(immediate=True) as session:
        workflow.suspend(
            session,
            ethics_audit,
            "gait-study",
            actor="sec-admin",
            reason="Audit alert.",
        )
    with ethics_catalog.session() as session:
        with pytest.raises(PermissionDenied, match="not approved"):
            projects.authorize_read(session, "alice", "ward-clips")
        notices = session.scalars(select(AccessNotice)).all()
        assert {n.username for n in notices} == {"alice", "pi-wang"}
        assert {n.reason for n in notices} == {"Audit alert."}

    with ethics_catalog.session(immediate=True) as session:
        workflow.resume(
            session, ethics_audit, "gait-study", actor="sec-admin", reason="Cleared."
        )
    with ethics_catalog.session() as session:
        assert projects.authorize_read(
            session, "alice", "ward-clips", require_agreement=False
        )
        closure = session.scalars(select(AccessClosure)).one()
        assert closure.reopened_at is not None
    actions = [action for _, action, _ in _actions(ethics_audit)]
    assert actions[-3:] == ["project.suspend", "access.revoke", "project.resume"]


def test_terminate_closes_access(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit)
    _approve(ethics_catalog, ethics_audit)

    with ethics_catalog.session(immediate=True) as session:
        workflow.terminate(
            session, ethics_audit, "gait-study", actor="sec-admin", reason="Breach."
        )

    with ethics_catalog.session() as session:
        with pytest.raises(PermissionDenied, match="terminated"):
            projects.authorize_read(session, "alice", "ward-clips")
        closure = session.scalars(select(AccessClosure)).one()
        assert closure.cause.value == "terminated"
        assert closure.members == ["alice", "pi-wang"]
    assert ("sec-admin", "project.terminate", "success") in _actions(ethics_audit)
    assert ("sec-admin", "access.revoke", "success") in _actions(ethics_audit)
    assert ethics_audit.verify().ok


def test_agreement_acceptance(ethics_catalog: Catalog, ethics_audit: AuditLog) -> None:
    from enclave.ethics.agreement import current_agreement

    _apply(ethics_catalog, ethics_audit)
    with pytest.raises(ValidationError, match="once the project is approved"):
        with ethics_catalog.session(immediate=True) as session:
            workflow.accept_agreement(
                session, ethics_audit, "gait-study", username="alice"
            )
    _approve(ethics_catalog, ethics_audit)
    agreement = current_agreement()

    with ethics_catalog.session() as session:
        assert not workflow.has_accepted_agreement(session, "alice", "gait-study")
    with pytest.raises(workflow.DecisionConflict, match="not the current version"):
        with ethics_catalog.session(immediate=True) as session:
            workflow.accept_agreement(
                session,
                ethics_audit,
                "gait-study",
                username="alice",
                text_sha256="0" * 64,
            )
    with ethics_catalog.session(immediate=True) as session:
        acceptance = workflow.accept_agreement(
            session,
            ethics_audit,
            "gait-study",
            username="alice",
            language="zh_CN",
            text_sha256=agreement.sha256("zh_CN"),
        )
        assert acceptance.text_sha256 == agreement.sha256("zh_CN")
        assert acceptance.agreement_version == agreement.version

    with ethics_catalog.session() as session:
        project = projects.get_project(session, "gait-study")
        assert workflow.has_accepted_agreement(session, "alice", "gait-study")
        assert workflow.has_accepted_agreement(session, "alice", project)
        assert not workflow.has_accepted_agreement(session, "pi-wang", "gait-study")
        assert not workflow.has_accepted_agreement(session, "alice", "no-such-project")
    event = ethics_audit.events(action="agreement.accept")[-1]
    assert event.detail["text_sha256"] == agreement.sha256("zh_CN")


def test_agreement_by_non_member_refused(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    _apply(ethics_catalog, ethics_audit)
    _approve(ethics_catalog, ethics_audit)

    with pytest.raises(PermissionDenied, match="not a member"):
        with ethics_catalog.session(immediate=True) as session:
            workflow.accept_agreement(
                session, ethics_audit, "gait-study", username="mallory"
            )
    assert _actions(ethics_audit)[-1] == ("mallory", "agreement.accept", "denied")


def test_withdrawn_amendment_changes_nothing(
    ethics_catalog: Catalog, ethics_audit: AuditLog
) -> None:
    amendment_id = _submit_member_amendment(
        ethics_catalog, ethics_audit, "dave", "extra hands"
    )

    with pytest.raises(PermissionDenied, match="did not ask for"):
        with ethics_catalog.session(immediate=True) as session:
            workflow.withdraw_amendment(
                session, ethics_audit, "gait-study", amendment_id, actor="rev-li"
            )
    with ethics_catalog.session(immediate=True) as session:
        workflow.withdraw_amendment(
            session, ethics_audit, "gait-study", amendment_id, actor="alice"
        )
    with pytest.raises(workflow.DecisionConflict, match="withdrawn"):
        with ethics_catalog.session(immediate=True) as session:
            workflow.review_amendment(
                session,
                ethics_audit,
                "gait-study",
                amendment_id,
                reviewer="rev-li",
                decision="approve",
            )

    with ethics_catalog.session() as session:
        project = projects.get_project(session, "gait-study")
        assert "dave" not in {m.username for m in project.members}
        assert workflow.pending_amendment(session, project) is None
    assert _actions(ethics_audit)[-2:] == [
        ("rev-li", "amendment.withdraw", "denied"),
        ("alice", "amendment.withdraw", "success"),
    ]
