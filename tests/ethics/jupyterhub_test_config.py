"""JupyterHub configuration of the browser test: real hub and proxy, ethics service.

Users sign in with JupyterHub's ``DummyAuthenticator`` (one shared password)
and get their roles from groups loaded at start-up. The ethics service runs
as a managed service with the scopes it needs to revoke access. Everything
listens on 127.0.0.1. Read by ``jupyterhub -f``; the test sets the
``ETHICS_TEST_*`` and ``ENCLAVE_*`` variables.
"""

from __future__ import annotations

import os
from pathlib import Path

from enclave.ethics.hub_service import USER_SCOPES, service_entry, service_role

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

REPO_ROOT = Path(__file__).resolve().parents[2]
state = Path(os.environ["ETHICS_TEST_STATE"])
hub_port = int(os.environ["ETHICS_TEST_HUB_PORT"])
service_port = int(os.environ["ETHICS_TEST_SERVICE_PORT"])

c.JupyterHub.bind_url = f"http://127.0.0.1:{hub_port}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{hub_port + 1}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{hub_port + 2}"
c.ConfigurableHTTPProxy.command = [
    str(REPO_ROOT / "hub_config" / "node_modules" / ".bin" / "configurable-http-proxy")
]
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ["ETHICS_TEST_PASSWORD"]
c.Authenticator.allow_all = True
c.JupyterHub.load_groups = {
    "researchers": {"users": ["alice"]},
    "ethics-committee": {"users": ["carol", "dave"]},
    "security-admins": {"users": ["heidi"]},
}

c.JupyterHub.load_roles = [
    {"name": "user", "scopes": ["self", *USER_SCOPES]},
    service_role(),
]
c.JupyterHub.services = [
    service_entry(
        f"http://127.0.0.1:{service_port}",
        environment={
            name: value
            for name, value in os.environ.items()
            if name.startswith("ENCLAVE_") or name == "PATH"
        },
        extra_args=["--sweep-interval", "2"],
    )
]
