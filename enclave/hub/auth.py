"""The hub's authenticator: OpenID Connect login with a second-factor rule.

Each login is recorded in the catalog and in the audit trail, a logout ends
the login record, and the groups of the user's running projects are kept
across logins.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jupyterhub.handlers.pages import TokenPageHandler
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLogoutHandler
from tornado import web
from traitlets import Float, Set, Unicode

from enclave.audit.log import AuditLog, load_audit_key
from enclave.catalog.db import Catalog
from enclave.lifecycle.hub_client import GROUP_PREFIX as PROJECT_GROUP_PREFIX
from enclave.lifecycle.revocation import project_groups_of
from enclave.policy.logins import MFA_METHOD, expire_hub_login, record_hub_login

__all__ = ["EnclaveLogoutHandler", "EnclaveOAuthenticator", "TokenPageWithScopeHandler"]

AUDIT_SOURCE = "hub"
"""The ``source`` of the audit events that the hub records."""


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


class EnclaveLogoutHandler(OAuthLogoutHandler):
    """The hub's /hub/logout, which also ends the user's login record in the catalog.

    Without this, the record would count for the broker's level 4 and 5
    login rules until it expires, so a server left running after the logout
    could still read level 4 and 5 data.
    """

    async def handle_logout(self) -> None:
        await super().handle_logout()
        # JupyterHub has cleared the login cookie, but ``current_user`` still
        # returns the user until the logout page is rendered.
        user = self.current_user
        if user is None:
            return
        authenticator: EnclaveOAuthenticator = self.authenticator
        try:
            await authenticator.end_login(user.name)
        except Exception as exc:
            authenticator.log.error(
                "ending the login record of %s at logout failed: %s", user.name, exc
            )
            raise web.HTTPError(
                503,
                "You are logged out of the hub, but the enclave could not end "
                "your login record, so it may still allow level 4 and 5 data "
                "until it expires. Stop your server, and ask the administrator "
                "to check the catalog.",
            ) from exc


class EnclaveOAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator that requires a second factor for some groups.

    The provider puts the authentication methods in the ``amr`` claim
    (``["pwd"]`` or ``["pwd", "otp"]``). Members of :attr:`mfa_required_groups`
    who signed in without ``otp`` are rejected.

    With :attr:`catalog_url` set, each login's ``amr`` and ``acr`` claims and
    groups are written to the catalog, where the broker checks the login
    rules of levels 4 and 5, together with a ``hub.login`` audit event. A
    login that cannot be written is rejected, because an older record might
    claim a second factor this login lacks, and every login must be in the
    audit trail. A rejection for a missing second factor or role group is
    audited too. A logout expires the login record (:class:`EnclaveLogoutHandler`).

    With ``manage_groups``, JupyterHub sets the user's groups to the ones the
    authenticator returns. The authenticator therefore replaces the groups
    ``project-*`` from the provider by those of the user's running projects
    in the catalog, which the revocation sweep also grants. A login or a
    refresh then neither drops a project group nor adds one of a project
    that has ended or was suspended or terminated.
    """

    logout_handler = EnclaveLogoutHandler

    catalog_url = Unicode(
        "",
        help="""URL of the enclave's catalog, where each login is recorded.

        Empty records nothing, and then the broker rejects every read of
        level 4 and 5 data.
        """,
    ).tag(config=True)

    audit_key_file = Unicode(
        "",
        help="""File of the audit key (mode 0600), to record logins in the audit trail.

        Required with :attr:`catalog_url`, because a login that cannot be
        audited is rejected.
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
        """Allow members of the allowed groups who used the sign-in methods required.

        A rejection is recorded as a ``denied`` ``hub.login`` audit event.
        """
        allowed = await super().check_allowed(username, auth_model)
        if auth_model is None:
            return allowed
        amr, acr = self._login_claims(auth_model)
        groups = set(auth_model.get("groups") or ())
        if not allowed:
            await self._audit_denial(
                username,
                amr,
                acr,
                groups,
                "not a member of any of the groups "
                + ", ".join(sorted(self.allowed_groups)),
            )
            return False

        needs_mfa = groups & self.mfa_required_groups
        if needs_mfa and MFA_METHOD not in amr:
            self.log.warning(
                "rejecting %s: members of %s must sign in with a second factor, "
                "but the methods used were %s",
                username,
                ", ".join(sorted(needs_mfa)),
                amr,
            )
            await self._audit_denial(
                username,
                amr,
                acr,
                groups,
                f"members of {', '.join(sorted(needs_mfa))} must sign in with a "
                "second factor",
            )
            return False
        return True

    def _login_claims(self, auth_model: dict) -> tuple[list[str], str | None]:
        """Return the ID token's ``amr`` and ``acr`` claims of ``auth_model``.

        A claim of the wrong type is returned as empty, which the broker reads
        as a login without a second factor.
        """
        claims = (auth_model.get("auth_state") or {}).get(
            self.user_auth_state_key
        ) or {}
        amr = claims.get("amr")
        acr = claims.get("acr")
        return (
            [str(method) for method in amr] if isinstance(amr, list) else [],
            acr if isinstance(acr, str) else None,
        )

    async def _audit_denial(
        self,
        username: str,
        amr: list[str],
        acr: str | None,
        groups: set[str],
        reason: str,
    ) -> None:
        if not self.catalog_url:
            return
        try:
            await asyncio.to_thread(
                self._append_login_event,
                username,
                "denied",
                {"amr": amr, "acr": acr, "groups": sorted(groups), "reason": reason},
            )
        except Exception as exc:
            # The login is rejected either way, so only the record is missing.
            self.log.error(
                "recording the rejected login of %s in the audit trail failed: %s",
                username,
                exc,
            )

    async def run_post_auth_hook(self, handler: Any, auth_model: dict) -> dict:
        """Record the login in the catalog and the audit trail, then run the hook.

        The groups ``project-*`` of ``auth_model`` are replaced by those of
        the user's running projects in the catalog.
        """
        auth_model = await super().run_post_auth_hook(handler, auth_model)
        if not self.catalog_url:
            return auth_model

        amr, acr = self._login_claims(auth_model)
        try:
            project_groups = await asyncio.to_thread(
                self._record_login,
                auth_model["name"],
                amr,
                acr,
                [str(group) for group in auth_model.get("groups") or []],
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
        if auth_model.get("groups") is not None:
            auth_model["groups"] = _with_project_groups(
                auth_model["groups"], project_groups
            )
        return auth_model

    async def refresh_user(
        self, user: Any, handler: Any = None, **kwargs: Any
    ) -> bool | dict:
        """Refresh the user's auth model, keeping the groups of running projects.

        JupyterHub syncs the groups of a refreshed auth model as it does at
        login, every ``auth_refresh_age`` seconds.
        """
        refreshed = await super().refresh_user(user, handler, **kwargs)
        if (
            not isinstance(refreshed, dict)
            or not self.catalog_url
            or refreshed.get("groups") is None
        ):
            return refreshed
        try:
            project_groups = await asyncio.to_thread(self._project_groups, user.name)
        except Exception as exc:
            # None leaves the hub's groups as they are, so the revocation
            # sweep stays in charge of the project groups.
            self.log.error(
                "looking up the project groups of %s failed, so their groups are "
                "left unchanged: %s",
                user.name,
                exc,
            )
            refreshed["groups"] = None
            return refreshed
        refreshed["groups"] = _with_project_groups(refreshed["groups"], project_groups)
        return refreshed

    async def end_login(self, username: str) -> None:
        """Expire ``username``'s login record in the catalog and audit the logout."""
        if not self.catalog_url:
            return
        await asyncio.to_thread(self._end_login, username)

    @contextmanager
    def _catalog(self) -> Iterator[Catalog]:
        # A fresh engine per call, disposed of at the end, so that the hub,
        # which runs as root, keeps no connection to the catalog open.
        catalog = Catalog(self.catalog_url)
        try:
            yield catalog
        finally:
            catalog.dispose()

    def _load_audit_key(self) -> bytes:
        if not self.audit_key_file:
            raise ValueError(
                "EnclaveOAuthenticator.audit_key_file is not set. Set it to the "
                "enclave's audit key so that logins can be audited."
            )
        return load_audit_key(self.audit_key_file)

    def _record_login(
        self, username: str, amr: list[str], acr: str | None, groups: list[str]
    ) -> list[str]:
        """Record the login and its audit event in one transaction.

        Return the groups of the user's running projects.
        """
        key = self._load_audit_key()
        with self._catalog() as catalog:
            audit = AuditLog(catalog, key)
            with catalog.session(immediate=True) as session:
                record_hub_login(
                    session,
                    username,
                    amr=amr,
                    acr=acr,
                    groups=groups,
                    lifetime=dt.timedelta(hours=self.login_lifetime_hours),
                )
                audit.append(
                    actor=username,
                    action="hub.login",
                    outcome="success",
                    source=AUDIT_SOURCE,
                    detail={"amr": sorted(set(amr)), "acr": acr, "groups": groups},
                    session=session,
                )
                project_groups = project_groups_of(session, username)
        self.log.info(
            "recorded the login of %s (amr %s)", username, "+".join(sorted(amr))
        )
        return project_groups

    def _append_login_event(
        self, username: str, outcome: str, detail: dict[str, Any]
    ) -> None:
        key = self._load_audit_key()
        with self._catalog() as catalog:
            AuditLog(catalog, key).append(
                actor=username,
                action="hub.login",
                outcome=outcome,
                source=AUDIT_SOURCE,
                detail=detail,
            )

    def _project_groups(self, username: str) -> list[str]:
        with self._catalog() as catalog, catalog.session() as session:
            return project_groups_of(session, username)

    def _end_login(self, username: str) -> None:
        with self._catalog() as catalog:
            # The record is expired in its own transaction, so that a failing
            # audit trail cannot keep the login valid.
            with catalog.session(immediate=True) as session:
                expired = expire_hub_login(session, username)
            try:
                audit = AuditLog(catalog, self._load_audit_key())
                audit.append(
                    actor=username,
                    action="hub.logout",
                    outcome="success",
                    source=AUDIT_SOURCE,
                    detail={"login_record_expired": expired},
                )
            except Exception as exc:
                self.log.error(
                    "recording the logout of %s in the audit trail failed: %s",
                    username,
                    exc,
                )
        self.log.info("ended the login record of %s at logout", username)


def _with_project_groups(groups: list[str], project_groups: list[str]) -> list[str]:
    """Return ``groups`` with its ``project-*`` groups replaced by the given ones."""
    provider_groups = {
        group for group in groups if not group.startswith(PROJECT_GROUP_PREFIX)
    }
    return sorted(provider_groups | set(project_groups))
