"""Signed-in researchers with running servers, shared by the hub tests."""

from __future__ import annotations

import pytest
import requests

from enclave.hub.launch import Running
from tests.fixtures.hub import (
    ServerProcess,
    find_server_process,
    login,
    open_server,
    start_server,
)


@pytest.fixture(scope="session")
def alice(hub: Running) -> requests.Session:
    return login(hub, "alice")


@pytest.fixture(scope="session")
def alice_server(hub: Running, alice: requests.Session) -> ServerProcess:
    start_server(hub, alice, "alice")
    # The first page visit lets the server's own OAuth client log alice in.
    assert open_server(hub, alice, "alice").status_code == 200
    return find_server_process(hub, "alice")


@pytest.fixture(scope="session")
def bob(hub: Running) -> requests.Session:
    return login(hub, "bob")


@pytest.fixture(scope="session")
def bob_server(hub: Running, bob: requests.Session) -> ServerProcess:
    start_server(hub, bob, "bob")
    return find_server_process(hub, "bob")
