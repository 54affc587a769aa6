"""Signing in through the OpenID Connect provider, with real HTTP on loopback."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import text

from enclave.audit import AuditLog, load_audit_key
from enclave.catalog.db import Catalog
from enclave.catalog.models import (
    Category,
    Dataset,
    HubLogin,
    Project,
    ProjectMember,
    ProjectStatus,
    utcnow,
)
from enclave.errors import PermissionDenied
from enclave.hub.launch import Running
from enclave.policy.logins import check_identity_rules
from tests.fixtures.hub import (
    LoginFailed,
    fresh_totp,
    login,
    login_response,
    xsrf_headers,
)

pytestmark = pytest.mark.e2e


def test_login_gives_hub_session(hub: Running, alice: requests.Session) -> None:
    response = alice.get(
        f"{hub.hub_url}/hub/api/user", headers=xsrf_headers(alice), timeout=30
    )

    assert response.status_code == 200
    model = response.json()
    assert model["name"] == "alice"
    assert "researchers" in model["groups"]
    assert "dept-ultrasound" in model["groups"]
    assert model["admin"] is False


def test_login_wrong_password_rejected(hub: Running) -> None:
    session, response = login_response(hub, "alice", "not-the-password")

    assert response.status_code == 401
    assert "Invalid user name or password" in response.text
    assert not session.cookies.get("jupyterhub-hub-login", path="/hub/")


def test_login_unknown_user_rejected(hub: Running) -> None:
    session, response = login_response(hub, "nobody", "whatever-password")

    assert response.status_code == 401
    assert "Invalid user name or password" in response.text
    assert not session.cookies.get("jupyterhub-hub-login", path="/hub/")


def test_login_without_role_group_rejected(hub: Running) -> None:
    with pytest.raises(LoginFailed) as excinfo:
        login(hub, "mallory")

    assert excinfo.value.response.status_code == 403


def test_token_endpoint_wrong_secret(hub: Running) -> None:
    response = requests.post(
        f"{hub.issuer}/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": "x"},
        auth=(hub.client_id, "wrong-secret"),
        timeout=30,
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_token_endpoint_unknown_client(hub: Running) -> None:
    response = requests.post(
        f"{hub.issuer}/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": "x"},
        auth=("not-a-client", "secret"),
        timeout=30,
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_discovery_lists_enclave_claims(hub: Running) -> None:
    document = requests.get(
        f"{hub.issuer}/.well-known/openid-configuration", timeout=30
    ).json()

    assert document["issuer"] == hub.issuer
    assert "groups" in document["claims_supported"]
    assert "amr" in document["claims_supported"]
    assert "urn:enclave:mfa" in document["acr_values_supported"]


def test_second_factor_login(hub: Running) -> None:
    secret = hub.accounts["grace"].totp_secret
    assert secret is not None
    code = fresh_totp(secret)

    session, wrong = login_response(
        hub, "grace", otp="000000" if code != "000000" else "111111"
    )
    assert wrong.status_code == 401
    assert "Invalid or already used code" in wrong.text
    assert not session.cookies.get("jupyterhub-hub-login", path="/hub/")

    session = login(hub, "grace", otp=code)
    model = session.get(
        f"{hub.hub_url}/hub/api/user", headers=xsrf_headers(session), timeout=30
    ).json()
    assert model["name"] == "grace"
    assert "security-admins" in model["groups"]

    # The same code a second time is a replay.
    session, replayed = login_response(hub, "grace", otp=code)
    assert replayed.status_code == 401
    assert not session.cookies.get("jupyterhub-hub-login", path="/hub/")


def test_mfa_group_password_only_rejected(hub: Running) -> None:
    # heidi is a security administrator whose account has no TOTP secret,
    # so the provider reports amr ["pwd"] and the hub rejects her.
    with pytest.raises(LoginFailed) as excinfo:
        login(hub, "heidi")

    assert excinfo.value.response.status_code == 403


def test_logout_ends_hub_session(hub: Running) -> None:
    session = login(hub, "carol")

    response = session.get(
        f"{hub.hub_url}/hub/logout", allow_redirects=False, timeout=30
    )
    after = session.get(f"{hub.hub_url}/hub/api/user", timeout=30)

    assert response.status_code == 302
    assert response.headers["Location"].startswith(f"{hub.issuer}/session/end")
    assert not session.cookies.get("jupyterhub-hub-login", path="/hub/")
    assert after.status_code == 403


def _audit(hub: Running) -> AuditLog:
    settings = hub.settings
    return AuditLog(Catalog(settings.db_url), load_audit_key(settings.audit_key_path))


def _catalog(hub: Running) -> Catalog:
    return Catalog(hub.settings.db_url)


@contextmanager
def _table_renamed(catalog: Catalog, table: str) -> Iterator[None]:
    """Rename ``table`` away for the block, so that every write to it fails."""
    with catalog.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {table} RENAME TO {table}_moved"))
    try:
        yield
    finally:
        with catalog.engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {table}_moved RENAME TO {table}"))


def _user_groups(hub: Running, session: requests.Session) -> list[str]:
    response = session.get(
        f"{hub.hub_url}/hub/api/user", headers=xsrf_headers(session), timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["groups"]


def test_login_is_audited(hub: Running) -> None:
    audit = _audit(hub)
    before = len(audit.events(actor="dave", action="hub.login"))

    login(hub, "dave")

    events = audit.events(actor="dave", action="hub.login")
    assert len(events) == before + 1
    event = events[-1]
    assert event.outcome == "success"
    assert event.source == "hub"
    assert event.detail["amr"] == ["pwd"]
    assert event.detail["acr"] != "urn:enclave:mfa"
    assert event.detail["groups"] == ["ethics-committee"]
    # Neither the password nor any token reaches the trail.
    stored = json.dumps(event.detail)
    assert hub.accounts["dave"].password not in stored
    assert "token" not in stored
    assert audit.verify().ok


def test_missing_second_factor_is_audited(hub: Running) -> None:
    audit = _audit(hub)

    with pytest.raises(LoginFailed):
        login(hub, "heidi")

    event = audit.events(actor="heidi", action="hub.login")[-1]
    assert event.outcome == "denied"
    assert event.detail["amr"] == ["pwd"]
    assert "second factor" in event.detail["reason"]
    assert "security-admins" in event.detail["reason"]
    assert audit.verify().ok


def test_login_without_role_group_is_audited(hub: Running) -> None:
    audit = _audit(hub)

    with pytest.raises(LoginFailed):
        login(hub, "mallory")

    event = audit.events(actor="mallory", action="hub.login")[-1]
    assert event.outcome == "denied"
    assert "not a member of any of the groups" in event.detail["reason"]


def test_unauditable_login_rejected(hub: Running) -> None:
    catalog = _catalog(hub)
    with catalog.session() as session:
        before = session.get(HubLogin, "frank")
        logged_in_before = before.logged_in_at if before else None
    with _table_renamed(catalog, "audit_events"):
        with pytest.raises(LoginFailed) as failed:
            login(hub, "frank")

    assert failed.value.response.status_code == 503
    assert "could not record your login" in failed.value.response.text
    # The login record rolled back with the audit event.
    with catalog.session() as session:
        after = session.get(HubLogin, "frank")
        logged_in_after = after.logged_in_at if after else None
    assert logged_in_after == logged_in_before
    catalog.dispose()


def test_logout_ends_second_factor_login(hub: Running) -> None:
    catalog = _catalog(hub)
    level5 = Dataset(name="level5-clips", category=Category.DIAGNOSIS, level=5)
    session = login(hub, "grace")
    with catalog.session() as db:
        # The MFA login satisfies the rule of level 5 while it lasts.
        check_identity_rules(db, "grace", level5)

    response = session.get(
        f"{hub.hub_url}/hub/logout", allow_redirects=False, timeout=30
    )

    assert response.status_code == 302
    with catalog.session() as db:
        record = db.get(HubLogin, "grace")
        assert record is not None
        assert record.expires_at <= utcnow()
        with pytest.raises(PermissionDenied, match="expired at"):
            check_identity_rules(db, "grace", level5)
    catalog.dispose()
    event = _audit(hub).events(actor="grace", action="hub.logout")[-1]
    assert event.outcome == "success"
    assert event.detail["login_record_expired"] is True


def test_logout_without_catalog_fails_loudly(hub: Running) -> None:
    catalog = _catalog(hub)
    session = login(hub, "erin")
    with _table_renamed(catalog, "hub_logins"):
        response = session.get(
            f"{hub.hub_url}/hub/logout", allow_redirects=False, timeout=30
        )
    catalog.dispose()

    assert response.status_code == 503
    assert "could not end your login record" in response.text
    # The hub session ends all the same.
    assert not session.cookies.get("jupyterhub-hub-login", path="/hub/")


def _add_project(
    hub: Running, name: str, status: ProjectStatus, *, pi: str, member: str
) -> None:
    today = dt.date.today()
    catalog = _catalog(hub)
    with catalog.session() as session:
        project = Project(
            name=name,
            title=f"Project {name}",
            purpose="research",
            principal_investigator=pi,
            status=status,
            starts_on=today - dt.timedelta(days=1),
            ends_on=today + dt.timedelta(days=30),
            created_by=pi,
            approved_at=utcnow(),
        )
        session.add(project)
        session.flush()
        session.add(ProjectMember(project_id=project.id, username=member))
    catalog.dispose()


def test_login_keeps_running_project_groups(hub: Running) -> None:
    suffix = secrets.token_hex(3)
    running = f"running-{suffix}"
    states = {
        running: ProjectStatus.APPROVED,
        f"suspended-{suffix}": ProjectStatus.SUSPENDED,
        f"terminated-{suffix}": ProjectStatus.TERMINATED,
        f"ended-{suffix}": ProjectStatus.ENDED,
    }
    for name, status in states.items():
        _add_project(hub, name, status, pi="erin", member="bob")

    # The login redirects to the spawn page, where JupyterHub refreshes the
    # auth model. Both the login and the refresh set the user's groups.
    groups = _user_groups(hub, login(hub, "bob"))

    assert f"project-{running}" in groups
    assert "researchers" in groups
    assert "dept-cardiology" in groups
    for name in states:
        if name != running:
            assert f"project-{name}" not in groups
    # The login record keeps the provider's groups only, for the department rule.
    catalog = _catalog(hub)
    with catalog.session() as session:
        record = session.get(HubLogin, "bob")
        assert record is not None
        assert record.groups == ["dept-cardiology", "researchers"]
    catalog.dispose()
