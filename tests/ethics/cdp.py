"""A small Chrome DevTools Protocol client that drives headless Chromium in tests.

One browser process serves several users: each :class:`Page` lives in its own
browser context, with its own cookies, like a separate private window.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import websocket

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
]
TIMEOUT = 30.0


def chromium_path() -> str | None:
    """Return the Chromium executable, or None if it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """A headless Chromium process and its DevTools connection."""

    def __init__(self, socket: websocket.WebSocket) -> None:
        self._socket = socket
        self._next_id = 0

    def send(self, method: str, session_id: str | None = None, **params: Any) -> Any:
        """Call one DevTools method and return its result, skipping events."""
        self._next_id += 1
        message: dict[str, Any] = {
            "id": self._next_id,
            "method": method,
            "params": params,
        }
        if session_id is not None:
            message["sessionId"] = session_id
        self._socket.send(json.dumps(message))
        while True:
            reply = json.loads(self._socket.recv())
            if reply.get("id") != self._next_id:
                continue
            if "error" in reply:
                raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
            return reply["result"]

    def new_page(self) -> Page:
        """Open a blank page in a fresh browser context."""
        context = self.send("Target.createBrowserContext")["browserContextId"]
        target = self.send(
            "Target.createTarget", url="about:blank", browserContextId=context
        )["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        page = Page(self, session)
        page.call("Page.enable")
        page.call("Runtime.enable")
        return page


class Page:
    """One tab: navigate, fill in forms, click and read the page."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id

    def call(self, method: str, **params: Any) -> Any:
        return self.browser.send(method, self.session_id, **params)

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its JSON value."""
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = TIMEOUT) -> Any:
        """Wait until ``expression`` is truthy in a fully loaded page; return it."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                # A DOM node is returned as an empty, falsy object, so
                # nodes count as true here.
                last = self.evaluate(
                    "(() => { if (document.readyState !== 'complete') return null;"
                    f" const value = ({expression});"
                    " return value instanceof Node ? true : value; })()"
                )
            except RuntimeError:
                # The page was replaced by a navigation while evaluating.
                last = None
            if last:
                return last
            time.sleep(0.2)
        raise TimeoutError(
            f"{expression!r} not true after {timeout} s at {self.url()}: "
            f"{self.text()[:500]!r}"
        )

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href.startsWith({json.dumps(url.split('?')[0])})")

    def url(self) -> str:
        try:
            return str(self.evaluate("location.href"))
        except RuntimeError:
            return "?"

    def text(self) -> str:
        try:
            return str(self.evaluate("document.body ? document.body.innerText : ''"))
        except RuntimeError:
            return ""

    def fill(self, selector: str, value: str) -> None:
        self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" e.value = {json.dumps(value)}; return true; }})()"
        )

    def check(self, selector: str) -> None:
        self.evaluate(
            f"(() => {{ document.querySelector({json.dumps(selector)}).checked = true;"
            " return true; })()"
        )

    def click(self, selector: str) -> None:
        """Click an element (usually a submit button) and wait for the next page."""
        marker = f"__before_{time.monotonic_ns()}"
        self.evaluate(f"window.{marker} = true")
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        self.wait_for(f"window.{marker} === undefined")


@contextmanager
def running_chromium() -> Iterator[Browser]:
    """Start headless Chromium with a fresh profile; stop it and delete the profile."""
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("chromium is not installed; apt-get install chromium")
    profile = Path(tempfile.mkdtemp(prefix="enclave-chromium-"))
    process = subprocess.Popen(
        [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        socket = websocket.create_connection(
            f"ws://127.0.0.1:{port}{path}", timeout=TIMEOUT, suppress_origin=True
        )
        try:
            yield Browser(socket)
        finally:
            socket.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)
