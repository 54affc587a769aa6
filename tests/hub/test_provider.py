"""The provider's ID token, from a code flow run by hand as the hub's client."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import jwt
import pytest
import requests

from enclave.hub.launch import Running
from tests.fixtures.hub import fresh_totp, login_response

pytestmark = pytest.mark.e2e


def client_secret(running: Running) -> str:
    return (running.state_dir / "hub" / "oidc-client-secret").read_text().strip()


def authorization_code(running: Running, username: str, verifier: str) -> str:
    """Sign ``username`` in at the provider and return the code sent to the hub."""
    account = running.accounts[username]
    callback = f"{running.hub_url}/hub/oauth_callback"
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        .rstrip(b"=")
        .decode()
    )
    query = urlencode(
        {
            "client_id": running.client_id,
            "redirect_uri": callback,
            "response_type": "code",
            "scope": "openid profile email groups",
            "state": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    session = requests.Session()
    form = session.get(f"{running.issuer}/auth?{query}", timeout=30)
    response = session.post(
        f"{form.url}/login",
        data={"username": username, "password": account.password},
        allow_redirects=False,
        timeout=30,
    )
    if 'name="otp"' in response.text:
        assert account.totp_secret
        response = session.post(
            f"{form.url}/otp",
            data={"otp": fresh_totp(account.totp_secret)},
            allow_redirects=False,
            timeout=30,
        )

    # Follow the provider's redirects, but stop before the hub's callback.
    for _ in range(10):
        location = urljoin(response.url, response.headers["Location"])
        if location.startswith(callback):
            return parse_qs(urlparse(location).query)["code"][0]
        response = session.get(location, allow_redirects=False, timeout=30)
    raise AssertionError("the provider did not redirect to the hub's callback")


def id_token_claims(running: Running, username: str) -> dict:
    verifier = secrets.token_urlsafe(48)
    code = authorization_code(running, username, verifier)
    response = requests.post(
        f"{running.issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": f"{running.hub_url}/hub/oauth_callback",
            "code_verifier": verifier,
        },
        auth=(running.client_id, client_secret(running)),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    token = response.json()["id_token"]
    signing_key = jwt.PyJWKClient(f"{running.issuer}/jwks").get_signing_key_from_jwt(
        token
    )
    return jwt.decode(
        token,
        signing_key.key,
        algorithms=["RS256"],
        audience=running.client_id,
        issuer=running.issuer,
    )


def test_id_token_password_claims(hub: Running) -> None:
    claims = id_token_claims(hub, "alice")

    assert claims["preferred_username"] == "alice"
    assert claims["name"] == "Alice Researcher"
    assert claims["email"] == "alice@enclave.invalid"
    assert claims["groups"] == ["researchers", "dept-ultrasound"]
    assert claims["sub"] == hub.accounts["alice"].sub
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == "urn:enclave:pwd"


def test_id_token_second_factor_claims(hub: Running) -> None:
    claims = id_token_claims(hub, "grace")

    assert claims["preferred_username"] == "grace"
    assert claims["amr"] == ["pwd", "otp"]
    assert claims["acr"] == "urn:enclave:mfa"


def test_code_reuse_rejected(hub: Running) -> None:
    verifier = secrets.token_urlsafe(48)
    code = authorization_code(hub, "bob", verifier)
    request = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": f"{hub.hub_url}/hub/oauth_callback",
        "code_verifier": verifier,
    }
    auth = (hub.client_id, client_secret(hub))

    first = requests.post(f"{hub.issuer}/token", data=request, auth=auth, timeout=30)
    second = requests.post(f"{hub.issuer}/token", data=request, auth=auth, timeout=30)

    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"


def test_wrong_code_verifier_rejected(hub: Running) -> None:
    code = authorization_code(hub, "bob", secrets.token_urlsafe(48))

    response = requests.post(
        f"{hub.issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": f"{hub.hub_url}/hub/oauth_callback",
            "code_verifier": secrets.token_urlsafe(48),
        },
        auth=(hub.client_id, client_secret(hub)),
        timeout=30,
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_unregistered_redirect_uri_rejected(hub: Running) -> None:
    query = urlencode(
        {
            "client_id": hub.client_id,
            "redirect_uri": "http://127.0.0.1:9/stolen",
            "response_type": "code",
            "scope": "openid",
        }
    )

    response = requests.get(
        f"{hub.issuer}/auth?{query}", allow_redirects=False, timeout=30
    )

    assert response.status_code == 400
    assert "redirect_uri" in response.text
    assert "Location" not in response.headers


def test_failed_password_is_logged(hub: Running) -> None:
    # The provider's failures never reach the hub, so its log is their record.
    wrong = f"wrong-{secrets.token_hex(4)}"
    _, response = login_response(hub, "frank", wrong)
    assert response.status_code == 401

    log_text = (hub.log_dir / "idp.log").read_text()
    assert 'login failed for "frank": wrong password' in log_text
    assert wrong not in log_text
    assert hub.accounts["frank"].password not in log_text
