"""A stand-in for the JupyterHub REST API on loopback, for service and revocation tests.

It implements the calls the ethics service makes: ``/user`` (who owns a
token), groups and their members, users with their servers, and tokens. It
keeps its state in memory and records every call, so a test can check what
the service asked the hub to do. ``FakeHub.fail`` makes every call fail
with HTTP 503, like a hub that is down.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tornado import web

SERVICE_TOKEN = "service-token-for-tests"


@dataclass
class FakeUser:
    name: str
    groups: set[str] = field(default_factory=set)
    running: bool = False
    tokens: dict[str, str] = field(default_factory=dict)
    """Token id to token value."""


class FakeHub:
    """The in-memory state behind the fake hub API."""

    def __init__(self) -> None:
        self.users: dict[str, FakeUser] = {}
        self.groups: dict[str, set[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail = False
        self._next_token = 1

    def add_user(self, name: str, *groups: str) -> str:
        """Create a user in ``groups`` with one token; return the token."""
        user = self.users.setdefault(name, FakeUser(name))
        user.groups.update(groups)
        return self.new_token(name)

    def new_token(self, name: str) -> str:
        token = f"token-{name}-{self._next_token}"
        self.users[name].tokens[f"a{self._next_token}"] = token
        self._next_token += 1
        return token

    def user_of_token(self, token: str) -> FakeUser | None:
        for user in self.users.values():
            if token in user.tokens.values():
                return user
        return None

    def group_names_of(self, name: str) -> list[str]:
        user = self.users[name]
        return sorted(user.groups | {g for g, m in self.groups.items() if name in m})


class _Handler(web.RequestHandler):
    def initialize(self, hub: FakeHub) -> None:
        self.hub = hub

    def check_xsrf_cookie(self) -> None:
        return None

    def prepare(self) -> None:
        self.hub.calls.append((self.request.method or "", self.request.path))
        if self.hub.fail:
            raise web.HTTPError(503)
        header = self.request.headers.get("Authorization", "")
        self.token = header.removeprefix("token ").strip()
        self.service = self.token == SERVICE_TOKEN
        if not self.service and self.hub.user_of_token(self.token) is None:
            raise web.HTTPError(403)

    def body(self) -> dict[str, Any]:
        return json.loads(self.request.body or b"{}")

    def require_service(self) -> None:
        if not self.service:
            raise web.HTTPError(403)


class WhoAmIHandler(_Handler):
    def get(self) -> None:
        user = self.hub.user_of_token(self.token)
        if user is None:
            raise web.HTTPError(403)
        self.write(
            {
                "kind": "user",
                "name": user.name,
                "admin": False,
                "groups": self.hub.group_names_of(user.name),
                "scopes": ["access:services!service=ethics"],
                "session_id": None,
            }
        )


class GroupHandler(_Handler):
    def get(self, name: str) -> None:
        self.require_service()
        if name not in self.hub.groups:
            raise web.HTTPError(404)
        self.write({"name": name, "users": sorted(self.hub.groups[name])})

    def post(self, name: str) -> None:
        self.require_service()
        if name in self.hub.groups:
            raise web.HTTPError(409)
        self.hub.groups[name] = set()
        self.set_status(201)
        self.write({"name": name, "users": []})


class GroupUsersHandler(_Handler):
    def _users(self) -> list[str]:
        names = self.body().get("users", [])
        for name in names:
            if name not in self.hub.users:
                raise web.HTTPError(400, f"No such user: {name}")
        return names

    def post(self, name: str) -> None:
        self.require_service()
        if name not in self.hub.groups:
            raise web.HTTPError(404)
        self.hub.groups[name].update(self._users())
        self.write({"name": name, "users": sorted(self.hub.groups[name])})

    def delete(self, name: str) -> None:
        self.require_service()
        if name not in self.hub.groups:
            raise web.HTTPError(404)
        self.hub.groups[name].difference_update(self._users())
        self.write({"name": name, "users": sorted(self.hub.groups[name])})


class UserHandler(_Handler):
    def get(self, name: str) -> None:
        self.require_service()
        user = self.hub.users.get(name)
        if user is None:
            raise web.HTTPError(404)
        servers = {"": {"name": "", "ready": user.running, "pending": None}}
        self.write({"name": name, "servers": servers})


class ServerHandler(_Handler):
    def delete(self, name: str) -> None:
        self.require_service()
        user = self.hub.users.get(name)
        if user is None:
            raise web.HTTPError(404)
        user.running = False
        self.set_status(204)


class TokensHandler(_Handler):
    def get(self, name: str) -> None:
        self.require_service()
        user = self.hub.users.get(name)
        if user is None:
            raise web.HTTPError(404)
        self.write({"api_tokens": [{"id": key} for key in sorted(user.tokens)]})


class TokenHandler(_Handler):
    def delete(self, name: str, token_id: str) -> None:
        self.require_service()
        user = self.hub.users.get(name)
        if user is None or token_id not in user.tokens:
            raise web.HTTPError(404)
        del user.tokens[token_id]
        self.set_status(204)


def make_fake_hub_app(hub: FakeHub) -> web.Application:
    args = {"hub": hub}
    return web.Application(
        [
            (r"/hub/api/user", WhoAmIHandler, args),
            (r"/hub/api/groups/([^/]+)", GroupHandler, args),
            (r"/hub/api/groups/([^/]+)/users", GroupUsersHandler, args),
            (r"/hub/api/users/([^/]+)", UserHandler, args),
            (r"/hub/api/users/([^/]+)/server", ServerHandler, args),
            (r"/hub/api/users/([^/]+)/tokens", TokensHandler, args),
            (r"/hub/api/users/([^/]+)/tokens/([^/]+)", TokenHandler, args),
        ]
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopThread:
    """An asyncio event loop in a background thread, for servers under test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, function: Callable[[], Any]) -> Any:
        """Run a plain function on the loop's thread and return its result."""

        async def call() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=60)

    def await_(self, coroutine: Any) -> Any:
        """Run a coroutine on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@contextmanager
def running_fake_hub(loop: LoopThread) -> Iterator[tuple[FakeHub, str]]:
    """Serve a fake hub on a free loopback port; yield it and its API URL."""
    hub = FakeHub()
    port = free_port()
    server = loop.run(lambda: make_fake_hub_app(hub).listen(port, address="127.0.0.1"))
    try:
        yield hub, f"http://127.0.0.1:{port}/hub/api"
    finally:
        loop.run(server.stop)
