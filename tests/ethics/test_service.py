"""The ethics service's pages, served on loopback and signed in through a fake hub."""

from __future__ import annotations

import datetime as dt
import html
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from enclave import projects
from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Project, ProjectStatus
from enclave.lifecycle.hub_client import project_group

from .conftest import add_datasets
from .service_harness import PREFIX, Browser, Service, running_service

TODAY = dt.date.today()


@pytest.fixture
def service(catalog: Catalog, audit_log: AuditLog) -> Iterator[Service]:
    add_datasets(catalog)
    with running_service(catalog, audit_log) as running:
        yield running


def _form(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "name": "gait-study",
        "title": "Gait of inpatients",
        "principal_investigator": "alice",
        "use_scene": "research",
        "summary": "Walking speed from ward video.",
        "deid_profile": "clinical-research",
        "datasets": ["ward-clips"],
        "members": "alice, bob",
        "starts_on": TODAY.isoformat(),
        "ends_on": (TODAY + dt.timedelta(days=60)).isoformat(),
        "ethics_ref": "EC-2026-041",
        "consent_basis": "written consent",
    }
    fields.update(changes)
    return fields


def _count_projects(catalog: Catalog) -> int:
    with catalog.session() as session:
        return session.scalar(select(func.count()).select_from(Project)) or 0


def _apply(browser: Browser, **changes: object):  # type: ignore[no-untyped-def]
    return browser.post("apply", _form(**changes), xsrf_from="apply")


def _vote(browser: Browser, decision: str, name: str = "gait-study", **extra: str):  # type: ignore[no-untyped-def]
    path = f"projects/{name}"
    page = browser.get(path)
    version = page.text.split('name="version" value="')[1].split('"')[0]
    return browser.post(
        f"{path}/review",
        {"decision": decision, "version": version, **extra},
        xsrf_from=path,
    )


def test_page_needs_hub_login(service: Service) -> None:
    import requests

    response = requests.get(service.url, allow_redirects=False, timeout=30)

    assert response.status_code == 302
    assert "/hub/api/oauth2/authorize" in response.headers["Location"]


def test_page_uses_hub_style_sheet(service: Service) -> None:
    alice = service.browser("alice", "researchers")

    page = alice.get()
    css = alice.get("static/css/style.min.css")

    assert f'href="{PREFIX}static/css/style.min.css' in page.text
    assert css.status_code == 200
    assert "bootstrap" in css.text.lower()


def test_apply_through_the_form(service: Service, catalog: Catalog) -> None:
    alice = service.browser("alice", "researchers")

    response = _apply(alice)

    assert response.status_code == 302
    assert response.headers["Location"] == f"{PREFIX}projects/gait-study"
    page = alice.get("projects/gait-study")
    assert page.status_code == 200
    assert 'data-status="submitted"' in page.text
    with catalog.session() as session:
        assert projects.get_project(session, "gait-study").created_by == "alice"


def test_forged_form_without_xsrf_rejected(service: Service, catalog: Catalog) -> None:
    alice = service.browser("alice", "researchers")
    alice.get("apply")

    response = alice.post("apply", _form(), xsrf_from=None)

    assert response.status_code == 403
    assert _count_projects(catalog) == 0


def test_xsrf_token_of_another_user_rejected(
    service: Service, catalog: Catalog
) -> None:
    alice = service.browser("alice", "researchers")
    mallory = service.browser("mallory", "researchers")
    stolen = mallory.xsrf("apply")
    alice.get("apply")

    fields = {**_form(), "_xsrf": stolen}
    response = alice.session.post(
        alice.base + "apply", data=fields, allow_redirects=False, timeout=30
    )

    assert response.status_code == 403
    assert _count_projects(catalog) == 0


def test_script_in_title_is_shown_as_text(service: Service) -> None:
    alice = service.browser("alice", "researchers")
    title = '<script>alert("x")</script><img src=x onerror=alert(1)>'

    assert _apply(alice, title=title, summary=title).status_code == 302
    committee = service.browser("rev-li", "ethics-committee")

    for page in (alice.get("projects/gait-study"), committee.get()):
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        assert html.escape(title, quote=False).replace('"', "&quot;") in page.text
        assert "script-src 'none'" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"title": ""}, "Title is missing"),
        ({"ends_on": (TODAY - dt.timedelta(days=400)).isoformat()}, "is not after"),
        (
            {"datasets": ["ward-clips", "secret-set"]},
            "Dataset &#x27;secret-set&#x27; does not exist",
        ),
        ({"starts_on": "2026-02-30"}, "&#x27;2026-02-30&#x27; is not a valid date"),
        ({"ends_on": "next year"}, "enter it as YYYY-MM-DD"),
        ({"use_scene": "marketing"}, "&#x27;marketing&#x27; is not known"),
        ({"name": "Bad Name"}, "Project name &#x27;Bad Name&#x27; is invalid"),
    ],
)
def test_invalid_form_explains_and_stores_nothing(
    service: Service, catalog: Catalog, changes: dict[str, object], expected: str
) -> None:
    alice = service.browser("alice", "researchers")

    response = _apply(alice, **changes)

    assert response.status_code == 400
    assert expected in response.text
    assert "Nothing was saved" in response.text
    assert _count_projects(catalog) == 0


def test_errors_and_page_in_chinese(service: Service) -> None:
    alice = service.browser("alice", "researchers", language="zh-CN,zh;q=0.9,en;q=0.8")

    page = alice.get()
    response = _apply(alice, title="", ends_on="2020-01-01")

    assert 'lang="zh-CN"' in page.text
    assert "伦理审查" in page.text
    assert response.status_code == 400
    assert "未保存任何内容" in response.text
    assert "标题" in response.text


def test_english_for_other_languages(service: Service) -> None:
    alice = service.browser("alice", "researchers", language="de-DE,en;q=0.5,zh;q=0.1")

    page = alice.get()

    assert 'lang="en"' in page.text
    assert "Ethics review" in page.text


def test_own_project_vote_refused(service: Service, audit_log: AuditLog) -> None:
    # bob sits on the committee and is a member of the project he would review.
    alice = service.browser("alice", "researchers")
    bob = service.browser("bob", "researchers", "ethics-committee")
    assert _apply(alice).status_code == 302

    page = bob.get("projects/gait-study")
    assert "You are a member of this project" in page.text
    assert 'id="review-form"' not in page.text
    # The page offers no review form, so the token comes from another page.
    response = bob.post(
        "projects/gait-study/review",
        {"decision": "approve", "version": "2"},
        xsrf_from="apply",
    )

    assert response.status_code == 403
    assert "cannot review" in html.unescape(response.text)
    last = audit_log.events()[-1]
    assert (last.actor, last.action, last.outcome) == (
        "bob",
        "project.approve",
        "denied",
    )


def test_vote_by_non_committee_refused(service: Service, audit_log: AuditLog) -> None:
    alice = service.browser("alice", "researchers")
    mallory = service.browser("mallory", "researchers")
    assert _apply(alice, members="alice, mallory").status_code == 302

    response = mallory.post(
        "projects/gait-study/review", {"decision": "approve"}, xsrf_from="apply"
    )

    assert response.status_code == 403
    assert audit_log.events()[-1].outcome == "denied"


def test_outsider_cannot_see_project(service: Service) -> None:
    alice = service.browser("alice", "researchers")
    eve = service.browser("eve", "researchers")
    assert _apply(alice).status_code == 302

    assert eve.get("projects/gait-study").status_code == 404
    assert "gait-study" not in eve.get().text


def test_concurrent_votes_one_state_change(service: Service, catalog: Catalog) -> None:
    alice = service.browser("alice", "researchers")
    assert _apply(alice, datasets=["teaching-clips"]).status_code == 302
    reviewers = [service.browser(f"rev-{i}", "ethics-committee") for i in range(3)]
    prepared = []
    for reviewer in reviewers:
        path = "projects/gait-study"
        page = reviewer.get(path)
        version = page.text.split('name="version" value="')[1].split('"')[0]
        prepared.append(
            (
                reviewer,
                {
                    "decision": "approve",
                    "version": version,
                    "_xsrf": reviewer.xsrf(path),
                },
            )
        )
    barrier = threading.Barrier(len(prepared))
    codes: list[int] = []

    def post(reviewer: Browser, fields: dict[str, str]) -> None:
        barrier.wait()
        response = reviewer.session.post(
            reviewer.base + "projects/gait-study/review",
            data=fields,
            allow_redirects=False,
            timeout=60,
        )
        codes.append(response.status_code)

    threads = [threading.Thread(target=post, args=item) for item in prepared]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(codes) == [302, 409, 409]
    with catalog.session() as session:
        project = projects.get_project(session, "gait-study")
        assert project.status is ProjectStatus.APPROVED
        assert len(project.approvals) == 1


def test_full_review_agreement_and_termination(
    service: Service, audit_log: AuditLog
) -> None:
    alice = service.browser("alice", "researchers")
    assert _apply(alice).status_code == 302
    for reviewer in ("rev-li", "rev-zhao"):
        committee = service.browser(reviewer, "ethics-committee")
        assert _vote(committee, "approve").status_code == 302
        if reviewer == "rev-li":
            waiting = alice.get("projects/gait-study").text
            assert "Round 1: 1 of 2 approvals needed." in waiting

    page = alice.get("projects/gait-study")
    assert 'data-status="approved"' in page.text
    assert "Accept the data use agreement" in page.text
    agreement = alice.get("projects/gait-study/agreement")
    sha = agreement.text.split('name="sha256" value="')[1].split('"')[0]
    missing_tick = alice.post(
        "projects/gait-study/agreement",
        {"language": "en", "sha256": sha},
        xsrf_from="projects/gait-study/agreement",
    )
    assert missing_tick.status_code == 400
    accepted = alice.post(
        "projects/gait-study/agreement",
        {"language": "en", "sha256": sha, "accept": "yes"},
        xsrf_from="projects/gait-study/agreement",
    )
    assert accepted.status_code == 302
    assert (
        "You have accepted the data use agreement"
        in alice.get("projects/gait-study").text
    )

    # The sweep puts the members into the project's hub group.
    service.sweep()
    group = project_group("gait-study")
    assert service.hub.groups[group] == {"alice"}
    service.hub.users["alice"].running = True

    heidi = service.browser("heidi", "security-admins")
    ended = heidi.post(
        "projects/gait-study/terminate",
        {"reason": "Consent withdrawn."},
        xsrf_from="projects/gait-study",
    )
    assert ended.status_code == 302
    service.sweep()

    assert service.hub.groups[group] == set()
    assert service.hub.users["alice"].running is False
    assert service.hub.users["alice"].tokens == {}
    revoked = audit_log.events(action="access.revoke")
    assert [e.detail["hub"] for e in revoked] == ["pending", "done"]

    # alice's token is gone, so she signs in again and reads why.
    alice_again = service.browser("alice", "researchers")
    front = alice_again.get()
    assert "Access ended" in front.text
    assert "Consent withdrawn." in front.text
    assert "was terminated on" in front.text


def test_security_admin_only_terminates(service: Service, catalog: Catalog) -> None:
    alice = service.browser("alice", "researchers")
    assert _apply(alice, datasets=["teaching-clips"]).status_code == 302
    committee = service.browser("rev-li", "ethics-committee")
    assert _vote(committee, "approve").status_code == 302

    response = committee.post(
        "projects/gait-study/terminate",
        {"reason": "I do not like it"},
        xsrf_from="apply",
    )

    assert response.status_code == 403
    with catalog.session() as session:
        assert (
            projects.get_project(session, "gait-study").status is ProjectStatus.APPROVED
        )


def test_amendment_through_the_page(service: Service, catalog: Catalog) -> None:
    alice = service.browser("alice", "researchers")
    assert _apply(alice, datasets=["teaching-clips"]).status_code == 302
    assert (
        _vote(service.browser("rev-li", "ethics-committee"), "approve").status_code
        == 302
    )

    bad = alice.post(
        "projects/gait-study/amend",
        {"new_ends_on": TODAY.isoformat(), "reason": "longer"},
        xsrf_from="projects/gait-study/amend",
    )
    assert bad.status_code == 400
    assert "can only extend" in bad.text
    good = alice.post(
        "projects/gait-study/amend",
        {"add_members": "carol", "reason": "A statistician joins."},
        xsrf_from="projects/gait-study/amend",
    )
    assert good.status_code == 302

    committee = service.browser("rev-zhao", "ethics-committee")
    page = committee.get("projects/gait-study")
    form_id = page.text.split('id="amendment-review-form-')[1].split('"')[0]
    version = page.text.split('name="version" value="')[1].split('"')[0]
    decided = committee.post(
        f"projects/gait-study/amendments/{form_id}/review",
        {"decision": "approve", "version": version},
        xsrf_from="projects/gait-study",
    )
    assert decided.status_code == 302
    with catalog.session() as session:
        members = {
            m.username for m in projects.get_project(session, "gait-study").members
        }
    assert "carol" in members


def test_agreement_by_outsider_refused(service: Service, audit_log: AuditLog) -> None:
    alice = service.browser("alice", "researchers")
    assert _apply(alice, datasets=["teaching-clips"]).status_code == 302
    assert (
        _vote(service.browser("rev-li", "ethics-committee"), "approve").status_code
        == 302
    )
    # A committee member may read the project but is not a member of it.
    carol = service.browser("carol", "ethics-committee")

    response = carol.post(
        "projects/gait-study/agreement",
        {"accept": "yes", "language": "en"},
        xsrf_from="apply",
    )

    assert response.status_code == 403
    assert audit_log.events()[-1].outcome == "denied"


def test_amendment_of_other_project_not_found(
    service: Service, catalog: Catalog
) -> None:
    alice = service.browser("alice", "researchers")
    assert _apply(alice, datasets=["teaching-clips"]).status_code == 302
    assert (
        _apply(alice, name="other-study", datasets=["teaching-clips"]).status_code
        == 302
    )
    committee = service.browser("rev-li", "ethics-committee")
    for name in ("gait-study", "other-study"):
        assert _vote(committee, "approve", name=name).status_code == 302
    requested = alice.post(
        "projects/other-study/amend",
        {"add_members": "carol", "reason": "help"},
        xsrf_from="projects/other-study/amend",
    )
    assert requested.status_code == 302

    # The amendment belongs to other-study, not to gait-study.
    response = service.browser("rev-zhao", "ethics-committee").post(
        "projects/gait-study/amendments/1/review",
        {"decision": "approve"},
        xsrf_from="apply",
    )

    assert response.status_code == 404
    with catalog.session() as session:
        members = {
            m.username for m in projects.get_project(session, "other-study").members
        }
    assert "carol" not in members


def test_notice_of_other_user_not_found(service: Service) -> None:
    alice = service.browser("alice", "researchers")
    assert _apply(alice, datasets=["teaching-clips"]).status_code == 302
    assert (
        _vote(service.browser("rev-li", "ethics-committee"), "approve").status_code
        == 302
    )
    heidi = service.browser("heidi", "security-admins")
    assert (
        heidi.post(
            "projects/gait-study/suspend",
            {"reason": "alert"},
            xsrf_from="projects/gait-study",
        ).status_code
        == 302
    )

    mallory = service.browser("mallory", "researchers")
    response = mallory.post("notices/1/dismiss", {}, xsrf_from="apply")

    assert response.status_code == 404
    assert "paused" in alice.get().text


@pytest.mark.parametrize(
    "path",
    ["projects/..%2F..%2Fhub", "projects/GAIT", "projects/gait-study/approve"],
)
def test_odd_paths_not_found(service: Service, path: str) -> None:
    alice = service.browser("alice", "researchers")

    assert alice.get(path).status_code == 404


def test_injected_dataset_name_is_unknown(service: Service, catalog: Catalog) -> None:
    alice = service.browser("alice", "researchers")

    response = _apply(alice, datasets=["ward-clips' OR '1'='1"])

    assert response.status_code == 400
    assert "does not exist" in response.text
    assert _count_projects(catalog) == 0


@pytest.fixture
def any_service(any_catalog: Catalog, any_audit_log: AuditLog) -> Iterator[Service]:
    add_datasets(any_catalog)
    with running_service(any_catalog, any_audit_log) as running:
        yield running


def test_review_on_every_database(any_service: Service, any_catalog: Catalog) -> None:
    alice = any_service.browser("alice", "researchers")
    assert _apply(alice).status_code == 302
    first = any_service.browser("rev-li", "ethics-committee")
    second = any_service.browser("rev-zhao", "ethics-committee")

    assert (
        _vote(first, "approve_with_conditions", conditions="No export.").status_code
        == 302
    )
    assert _vote(second, "approve").status_code == 302

    page = alice.get("projects/gait-study")
    assert 'data-status="approved"' in page.text
    assert "No export." in page.text
    with any_catalog.session() as session:
        assert (
            projects.get_project(session, "gait-study").status is ProjectStatus.APPROVED
        )


def test_withdraw_amendment_through_the_page(
    service: Service, catalog: Catalog
) -> None:
    alice = service.browser("alice", "researchers")
    assert _apply(alice, datasets=["teaching-clips"]).status_code == 302
    assert (
        _vote(service.browser("rev-li", "ethics-committee"), "approve").status_code
        == 302
    )
    assert (
        alice.post(
            "projects/gait-study/amend",
            {"add_members": "carol", "reason": "help"},
            xsrf_from="projects/gait-study/amend",
        ).status_code
        == 302
    )

    page = alice.get("projects/gait-study")
    assert 'id="withdraw-form-1"' in page.text
    response = alice.post(
        "projects/gait-study/amendments/1/withdraw", {}, xsrf_from="projects/gait-study"
    )

    assert response.status_code == 302
    assert 'id="ask-amendment"' in alice.get("projects/gait-study").text
