"""A small client of the JupyterHub REST API for granting and revoking project access.

The ethics service calls it with its own service token. The service's role in
``jupyterhub_config.py`` needs the scopes in :data:`REQUIRED_SCOPES`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from enclave.errors import ConfigurationError, EnclaveError

__all__ = ["REQUIRED_SCOPES", "HubApiError", "HubClient", "project_group"]

log = logging.getLogger(__name__)

REQUIRED_SCOPES = (
    "read:users",
    "read:servers",
    "delete:servers",
    "read:tokens",
    "tokens",
    "read:groups",
    "groups",
    "admin:groups",
)
"""Hub scopes the ethics service's token needs to grant and revoke access."""

GROUP_PREFIX = "project-"


def project_group(project_name: str) -> str:
    """Return the name of the hub group whose members may work on ``project_name``."""
    return f"{GROUP_PREFIX}{project_name}"


class HubApiError(EnclaveError):
    """The hub's REST API refused a request or could not be reached."""


class HubClient:
    """Calls of the hub's REST API made with a service token.

    Parameters
    ----------
    api_url
        The hub's API URL, e.g. ``http://127.0.0.1:8081/hub/api``.
    token
        The service's API token; it is sent in the ``Authorization`` header
        and never logged.
    timeout
        Seconds to wait for each request.
    """

    def __init__(self, api_url: str, token: str, *, timeout: float = 10.0) -> None:
        if not api_url or not token:
            raise ConfigurationError(
                "the hub API URL and token are missing; run the ethics service as "
                "a hub service or set JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN"
            )
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"HubClient({self.api_url!r})"

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> HubClient:
        """Create a client from the variables the hub sets for a managed service."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("JUPYTERHUB_API_URL", ""), env.get("JUPYTERHUB_API_TOKEN", "")
        )

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        missing_ok: tuple[int, ...] = (),
    ) -> Any:
        request = HTTPRequest(
            f"{self.api_url}{path}",
            method=method,
            headers={
                "Authorization": f"token {self._token}",
                "Content-Type": "application/json",
            },
            body=None if body is None else json.dumps(body),
            # The hub's group API takes a JSON body on DELETE.
            allow_nonstandard_methods=True,
            request_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            if exc.code in missing_ok:
                return None
            raise HubApiError(
                f"hub API {method} {path} failed with HTTP {exc.code}; check that "
                f"the ethics service's role has the scopes {', '.join(REQUIRED_SCOPES)}"
            ) from exc
        except OSError as exc:
            raise HubApiError(
                f"hub API {self.api_url} cannot be reached ({exc}); check that the "
                "hub is running"
            ) from exc
        if not response.body:
            return None
        return json.loads(response.body)

    async def ensure_group(self, group: str) -> None:
        """Create ``group`` in the hub if it does not exist."""
        path = f"/groups/{quote(group, safe='')}"
        if await self._request("GET", path, missing_ok=(404,)) is None:
            await self._request("POST", path, {"users": []}, missing_ok=(409,))
            log.info("created hub group %s", group)

    async def group_members(self, group: str) -> set[str] | None:
        """Return the user names in ``group``, or None if the group does not exist."""
        model = await self._request(
            "GET", f"/groups/{quote(group, safe='')}", missing_ok=(404,)
        )
        return None if model is None else set(model.get("users", []))

    async def add_to_group(self, group: str, username: str) -> bool:
        """Add one user to ``group``; return False if the hub has no such user yet."""
        result = await self._request(
            "POST",
            f"/groups/{quote(group, safe='')}/users",
            {"users": [username]},
            missing_ok=(400,),
        )
        return result is not None

    async def remove_from_group(self, group: str, username: str) -> None:
        """Remove one user from ``group``; a missing user or group is no error."""
        await self._request(
            "DELETE",
            f"/groups/{quote(group, safe='')}/users",
            {"users": [username]},
            missing_ok=(400, 404),
        )

    async def stop_servers(self, username: str) -> list[str]:
        """Stop every running or starting server of a user; return their names."""
        user_path = f"/users/{quote(username, safe='')}"
        model = await self._request("GET", user_path, missing_ok=(404,))
        if model is None:
            return []

        stopped = []
        for name, server in (model.get("servers") or {}).items():
            if not (server.get("ready") or server.get("pending")):
                continue
            path = (
                f"{user_path}/servers/{quote(name, safe='')}"
                if name
                else f"{user_path}/server"
            )
            await self._request("DELETE", path, missing_ok=(404,))
            stopped.append(name)
        return stopped

    async def revoke_tokens(self, username: str) -> int:
        """Delete every API and OAuth token of a user; return how many were listed."""
        user_path = f"/users/{quote(username, safe='')}"
        listing = await self._request("GET", f"{user_path}/tokens", missing_ok=(404,))
        if listing is None:
            return 0

        tokens = listing.get("api_tokens", []) + listing.get("oauth_tokens", [])
        for token in tokens:
            # Deleting one OAuth token deletes its client's other tokens, so a
            # later id of the same client may be gone already.
            await self._request(
                "DELETE",
                f"{user_path}/tokens/{quote(token['id'], safe='')}",
                missing_ok=(404,),
            )
        return len(tokens)
