"""The ethics service on loopback, signed in through a fake hub, for page tests.

Each user gets a ``requests`` session carrying the service's login cookie
for a token that the fake hub accepts, the way HubOAuth stores it after the OAuth
flow. Forms are posted with the XSRF token taken from the page, as a
browser does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests
from jupyterhub.services.auth import HubOAuth
from tornado.web import create_signed_value

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.ethics.app import EthicsContext, make_app
from enclave.lifecycle.hub_client import HubClient
from tests.lifecycle.fake_hub import (
    SERVICE_TOKEN,
    FakeHub,
    LoopThread,
    free_port,
    running_fake_hub,
)

PREFIX = "/services/ethics/"
CLIENT_ID = "service-ethics"
COOKIE_SECRET = b"0123456789abcdef0123456789abcdef"
XSRF_RE = re.compile(r'name="_xsrf" value="([^"]+)"')


@dataclass
class Service:
    """A running ethics service and the fake hub it signs users in with."""

    url: str
    hub: FakeHub
    context: EthicsContext
    loop: LoopThread

    def browser(self, username: str, *groups: str, language: str = "en") -> Browser:
        """Return a signed-in session of a hub user in ``groups``."""
        token = self.hub.add_user(username, *groups)
        session = requests.Session()
        cookie = create_signed_value(COOKIE_SECRET, CLIENT_ID, token).decode("ascii")
        session.cookies.set(CLIENT_ID, cookie, domain="127.0.0.1", path=PREFIX)
        session.headers["Accept-Language"] = language
        return Browser(self.url, session)

    def sweep(self) -> object:
        """Run one revocation sweep on the service's loop."""
        from enclave.lifecycle.revocation import run_revocation

        return self.loop.await_(
            run_revocation(self.context.catalog, self.context.audit, self.context.hub)
        )


@dataclass
class Browser:
    base: str
    session: requests.Session

    def get(self, path: str = "", **kwargs: object) -> requests.Response:
        return self.session.get(self.base + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def xsrf(self, path: str = "") -> str:
        """Open a page as a browser would and return the XSRF token of its forms."""
        page = self.get(path)
        match = XSRF_RE.search(page.text)
        assert match, f"no form with an XSRF token on {path!r}: {page.status_code}"
        return match.group(1)

    def post(
        self, path: str, data: dict[str, object], *, xsrf_from: str | None = ""
    ) -> requests.Response:
        """Post a form; take the XSRF token from ``xsrf_from``, or send none if None."""
        fields = dict(data)
        if xsrf_from is not None:
            fields["_xsrf"] = self.xsrf(xsrf_from)
        return self.session.post(
            self.base + path, data=fields, timeout=30, allow_redirects=False
        )


@contextmanager
def running_service(catalog: Catalog, audit: AuditLog) -> Iterator[Service]:
    """Start a fake hub and the ethics service on free loopback ports."""
    # The hub runs on a loop of its own: HubOAuth identifies users with a
    # blocking call made while the service's loop waits for the response.
    hub_loop, loop = LoopThread(), LoopThread()
    try:
        with running_fake_hub(hub_loop) as (hub, api_url):
            hub_auth = HubOAuth(
                api_url=api_url,
                api_token=SERVICE_TOKEN,
                oauth_client_id=CLIENT_ID,
                base_url=PREFIX,
                hub_prefix="/hub/",
                access_scopes={"access:services!service=ethics"},
                cache_max_age=0,
            )
            context = EthicsContext(
                catalog=catalog,
                audit=audit,
                hub_auth=hub_auth,
                prefix=PREFIX,
                hub=HubClient(api_url, SERVICE_TOKEN),
            )
            port = free_port()
            server = loop.run(
                lambda: make_app(context, cookie_secret=COOKIE_SECRET).listen(
                    port, address="127.0.0.1"
                )
            )
            try:
                yield Service(f"http://127.0.0.1:{port}{PREFIX}", hub, context, loop)
            finally:
                loop.run(server.stop)
    finally:
        loop.stop()
        hub_loop.stop()
