"""The entries that register the ethics service in ``jupyterhub_config.py``.

Example::

    from enclave.ethics.hub_service import (
        USER_SCOPES, service_entry, service_role,
    )

    c.JupyterHub.services.append(
        service_entry("http://127.0.0.1:10101", environment=service_env)
    )
    c.JupyterHub.load_roles.append(service_role())
    # and add USER_SCOPES to the scopes of the "user" role
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from enclave.lifecycle.hub_client import REQUIRED_SCOPES

__all__ = ["SERVICE_NAME", "USER_SCOPES", "service_entry", "service_role"]

SERVICE_NAME = "ethics"

USER_SCOPES = (f"access:services!service={SERVICE_NAME}",)
"""Scopes every hub user needs to open the ethics page."""


def service_entry(
    url: str,
    *,
    environment: Mapping[str, str],
    user: str | None = None,
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Return the ``c.JupyterHub.services`` entry that runs ``enclave ethics serve``.

    Parameters
    ----------
    url
        Where the service listens, e.g. ``http://127.0.0.1:10101``.
    environment
        The ``ENCLAVE_*`` settings (and ``PATH``) of the service.
    user
        OS user to run it as: one that can read the catalog and the audit
        key, such as the broker's user. None runs it as the hub's user.
    extra_args
        More arguments of ``enclave ethics serve``, e.g. ``--sweep-interval``.
    """
    entry: dict[str, Any] = {
        "name": SERVICE_NAME,
        "url": url,
        "command": [
            str(Path(sys.executable).parent / "enclave"),
            "ethics",
            "serve",
            *extra_args,
        ],
        "environment": dict(environment),
        "oauth_no_confirm": True,
        "display": True,
    }
    if user is not None:
        entry["user"] = user
    return entry


def service_role() -> dict[str, Any]:
    """Return the role that lets the service revoke access in the hub."""
    return {
        "name": "ethics-service",
        "description": "Grant and revoke project access: groups, servers, tokens",
        "services": [SERVICE_NAME],
        "scopes": list(REQUIRED_SCOPES),
    }
