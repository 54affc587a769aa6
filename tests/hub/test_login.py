"""Signing in through the OpenID Connect provider, with real HTTP on loopback."""

from __future__ import annotations

import pytest
import requests

from enclave.hub.launch import Running
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
