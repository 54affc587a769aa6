"""What a signed-in researcher and their server's token must not be able to do."""

from __future__ import annotations

import json

import pytest
import requests

from enclave.hub.launch import Running
from tests.fixtures.hub import ServerProcess, open_server, xsrf_headers

pytestmark = pytest.mark.e2e


def test_token_page_forbidden(hub: Running, alice: requests.Session) -> None:
    response = alice.get(f"{hub.hub_url}/hub/token", timeout=30)

    assert response.status_code == 403
    assert "API tokens are disabled" in response.text


def test_token_api_forbidden(hub: Running, alice: requests.Session) -> None:
    response = alice.post(
        f"{hub.hub_url}/hub/api/users/alice/tokens",
        json={"note": "exfiltration", "expires_in": 3600},
        headers=xsrf_headers(alice),
        timeout=30,
    )

    assert response.status_code == 403


def test_sharing_forbidden(hub: Running, alice: requests.Session) -> None:
    response = alice.post(
        f"{hub.hub_url}/hub/api/shares/alice/",
        json={"user": "bob"},
        headers=xsrf_headers(alice),
        timeout=30,
    )

    assert response.status_code in (403, 404)


def test_server_token_cannot_list_users(
    hub: Running, alice_server: ServerProcess
) -> None:
    token = alice_server.environ["JUPYTERHUB_API_TOKEN"]

    response = requests.get(
        f"{hub.hub_url}/hub/api/users",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )

    assert response.status_code == 403


def test_server_token_cannot_create_tokens(
    hub: Running, alice_server: ServerProcess
) -> None:
    token = alice_server.environ["JUPYTERHUB_API_TOKEN"]

    response = requests.post(
        f"{hub.hub_url}/hub/api/users/alice/tokens",
        json={},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )

    assert response.status_code == 403


def test_server_token_cannot_reach_other_server(
    hub: Running, alice_server: ServerProcess, bob_server: ServerProcess
) -> None:
    token = alice_server.environ["JUPYTERHUB_API_TOKEN"]

    response = requests.get(
        f"{hub.hub_url}/user/bob/api/contents",
        headers={"Authorization": f"token {token}"},
        allow_redirects=False,
        timeout=30,
    )

    assert response.status_code == 403


def test_other_user_cannot_open_server(
    hub: Running,
    alice_server: ServerProcess,
    bob: requests.Session,
) -> None:
    page = open_server(hub, bob, "alice")
    api = bob.get(f"{hub.hub_url}/user/alice/api/contents", timeout=30)

    # The hub's OAuth step rejects bob's login to alice's server.
    assert page.status_code == 403
    assert "/hub/api/oauth2/authorize" in page.url
    assert api.status_code == 403


def test_own_server_reachable(
    hub: Running, alice: requests.Session, alice_server: ServerProcess
) -> None:
    response = alice.get(f"{hub.hub_url}/user/alice/api/status", timeout=30)

    assert response.status_code == 200


def test_terminals_api_absent(
    hub: Running, alice: requests.Session, alice_server: ServerProcess
) -> None:
    listing = alice.get(f"{hub.hub_url}/user/alice/api/terminals", timeout=30)
    xsrf = alice.cookies.get("_xsrf", path="/user/alice/")
    created = alice.post(
        f"{hub.hub_url}/user/alice/api/terminals",
        headers={"X-XSRFToken": xsrf} if xsrf else {},
        timeout=30,
    )

    assert listing.status_code == 404
    assert created.status_code in (403, 404)


def test_only_enclave_kernel_offered(
    hub: Running, alice: requests.Session, alice_server: ServerProcess
) -> None:
    response = alice.get(f"{hub.hub_url}/user/alice/api/kernelspecs", timeout=30)

    assert response.status_code == 200
    specs = response.json()
    assert specs["default"] == "enclave-python"
    assert set(specs["kernelspecs"]) <= {"enclave-python"}


def test_no_admin_page(hub: Running, alice: requests.Session) -> None:
    response = alice.get(f"{hub.hub_url}/hub/admin", timeout=30)

    assert response.status_code == 403


def test_home_page_hides_token_link(hub: Running, alice: requests.Session) -> None:
    response = alice.get(f"{hub.hub_url}/hub/home", timeout=30)

    assert response.status_code == 200
    assert 'href="/hub/home"' in response.text
    assert 'href="/hub/token"' not in response.text


def test_lab_plugins_locked_down(
    hub: Running, alice: requests.Session, alice_server: ServerProcess
) -> None:
    response = alice.get(f"{hub.hub_url}/user/alice/lab", timeout=30)
    start = response.text.index('id="jupyter-config-data"')
    config_text = response.text[response.text.index(">", start) + 1 :]
    config = json.loads(config_text[: config_text.index("</script>")])

    assert response.status_code == 200
    disabled = config["disabledExtensions"]
    assert "@jupyterlab/extensionmanager-extension" in disabled
    assert "@jupyterlab/terminal-extension" in disabled
    assert config["news"] == {"disabled": True}
    assert config["extensionManager"]["name"] == "read-only"


def test_lab_plugins_cannot_be_enabled(
    hub: Running, alice: requests.Session, alice_server: ServerProcess
) -> None:
    url = f"{hub.hub_url}/user/alice/lab/api/plugins"
    xsrf = alice.cookies.get("_xsrf", path="/user/alice/")

    locks = alice.get(url, timeout=30).json()
    response = alice.post(
        url,
        json={"cmd": "enable", "plugin_name": "@jupyterlab/terminal-extension"},
        headers={"X-XSRFToken": xsrf} if xsrf else {},
        timeout=30,
    )

    assert locks["allLocked"] is True
    assert response.status_code == 500
    assert "locked" in response.json()["message"]
