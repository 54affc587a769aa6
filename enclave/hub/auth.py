"""The hub's authenticator: OpenID Connect login with a second-factor rule."""

from __future__ import annotations

from typing import Any

from jupyterhub.handlers.pages import TokenPageHandler
from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from traitlets import Set, Unicode

__all__ = ["EnclaveOAuthenticator", "TokenPageWithScopeHandler"]

MFA_METHOD = "otp"


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
    """

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
