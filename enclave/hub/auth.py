"""The hub's authenticator: OpenID Connect login with a second-factor rule."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from jupyterhub.handlers.pages import TokenPageHandler
from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from traitlets import Float, Set, Unicode

from enclave.catalog.db import Catalog
from enclave.policy.logins import MFA_METHOD, record_hub_login

__all__ = ["EnclaveOAuthenticator", "TokenPageWithScopeHandler"]


class TokenPageWithScopeHandler(TokenPageHandler):
    """The hub's /hub/token page, shown only to users who may manage tokens.

    JupyterHub renders the page for every signed-in user, whatever their
    scopes. In the enclave the ``user`` role has no ``tokens`` scope, so a
    researcher cannot create a long-lived API token, and the page returns 403.
    """

    @web.authenticated
    async def get(self) -> None:
        if "tokens" not in self.parsed_scopes:
            raise web.HTTPError(
                403,
                "API tokens are disabled for your account: the enclave gives "
                "access only through the browser session.",
            )
        await super().get()


class EnclaveOAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator that requires a second factor for some groups.

    The provider puts the authentication methods in the ``amr`` claim
    (``["pwd"]`` or ``["pwd", "otp"]``). Members of :attr:`mfa_required_groups`
    who signed in without ``otp`` are rejected.

    With :attr:`catalog_url` set, each login's ``amr`` and ``acr`` claims and
    groups are written to the catalog, where the broker checks the login
    rules of levels 4 and 5. A login that cannot be written is rejected,
    because an older record might claim a second factor this login lacks.
    """

    catalog_url = Unicode(
        "",
        help="""URL of the enclave's catalog, where each login is recorded.

        Empty records nothing, and then the broker rejects every read of
        level 4 and 5 data.
        """,
    ).tag(config=True)

    login_lifetime_hours = Float(
        8.0,
        help="""Hours a recorded login counts for the broker's login rules.

        Set it to the hub's cookie lifetime (``JupyterHub.cookie_max_age_days``
        times 24), so that a login counts only while its cookie is valid.
        """,
    ).tag(config=True)

    mfa_required_groups = Set(
        Unicode(),
        help="""Groups whose members must sign in with a second factor (amr "otp").

        Requires ``manage_groups`` and ``userdata_from_id_token``, because the
        ``amr`` claim is only in the ID token.
        """,
    ).tag(config=True)

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        # The authenticator's handlers are registered before the hub's own,
        # so this route takes precedence over the default token page.
        return [(r"/token", TokenPageWithScopeHandler), *super().get_handlers(app)]

    async def check_allowed(self, username: str, auth_model: dict | None) -> bool:
        """Allow members of the allowed groups who used the sign-in methods required."""
        allowed = await super().check_allowed(username, auth_model)
        if not allowed or auth_model is None:
            return allowed

        groups = set(auth_model.get("groups") or ())
        needs_mfa = groups & self.mfa_required_groups
        claims = (auth_model.get("auth_state") or {}).get(
            self.user_auth_state_key
        ) or {}
        methods = claims.get("amr") or []
        if needs_mfa and MFA_METHOD not in methods:
            self.log.warning(
                "rejecting %s: members of %s must sign in with a second factor, "
                "but the methods used were %s",
                username,
                ", ".join(sorted(needs_mfa)),
                methods,
            )
            return False
        return True

    async def run_post_auth_hook(self, handler: Any, auth_model: dict) -> dict:
        """Record the login in the catalog, then run the configured hook."""
        auth_model = await super().run_post_auth_hook(handler, auth_model)
        if not self.catalog_url:
            return auth_model

        claims = (auth_model.get("auth_state") or {}).get(
            self.user_auth_state_key
        ) or {}
        # A claim of the wrong type is recorded as empty, which the broker
        # reads as a login without a second factor.
        amr = claims.get("amr")
        acr = claims.get("acr")
        try:
            await asyncio.to_thread(
                self._record_login,
                auth_model["name"],
                [str(method) for method in amr] if isinstance(amr, list) else [],
                acr if isinstance(acr, str) else None,
                auth_model.get("groups") or [],
            )
        except Exception as exc:
            self.log.error(
                "recording the login of %s failed: %s", auth_model["name"], exc
            )
            raise web.HTTPError(
                503,
                "The enclave could not record your login, so it cannot be used "
                "for data. Try again in a minute, or ask the administrator to "
                "check the catalog.",
            ) from exc
        return auth_model

    def _record_login(
        self, username: str, amr: list[str], acr: str | None, groups: list[str]
    ) -> None:
        # A fresh engine per login, closed at once: the hub runs as root, and
        # an SQLite catalog's WAL files must stay owned by the broker's user,
        # who keeps its own connections open.
        catalog = Catalog(self.catalog_url)
        try:
            with catalog.session(immediate=True) as session:
                record_hub_login(
                    session,
                    username,
                    amr=amr,
                    acr=acr,
                    groups=[str(group) for group in groups],
                    lifetime=dt.timedelta(hours=self.login_lifetime_hours),
                )
        finally:
            catalog.dispose()
        self.log.info(
            "recorded the login of %s (amr %s)", username, "+".join(sorted(amr))
        )
