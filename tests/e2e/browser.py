"""Drive headless Chromium through the enclave's real login, ethics and Lab pages.

The DevTools client is :mod:`tests.ethics.cdp`. On top of it, this module
signs in on the OpenID provider's pages, with a TOTP code for accounts that
have a second factor. It also sends keyboard and mouse input to JupyterLab,
makes requests from the page itself with its cookies, and dumps every open
page when a test fails.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from enclave.hub.launch import Running
from tests.ethics.cdp import Page
from tests.fixtures.hub import fresh_totp

SIGN_IN_TIMEOUT = 120.0

# Modifier bit of Input.dispatchKeyEvent for the Control key.
CONTROL = 2


def _not_null(expression: str) -> str:
    """Wrap ``expression`` so that a missing element yields null, not an exception."""
    return (
        f"(() => {{ try {{ return ({expression}); }}"
        " catch (e) { return null; } })()"
    )


def open_signed_in(
    page: Page,
    running: Running,
    username: str,
    url: str,
    ready: str,
    timeout: float = SIGN_IN_TIMEOUT,
) -> None:
    """Open ``url`` and sign in on the provider's pages if the hub sends us there.

    ``ready`` is a JavaScript expression that is true once the expected page
    has loaded. A browser that still has a hub session skips the provider.

    NOTE: a page with a beforeunload prompt (JupyterLab with unsaved
    changes) blocks the navigation until the DevTools call times out, so save
    such a page first.
    """
    login_form = (
        f"location.href.startsWith({json.dumps(running.issuer + '/interaction/')})"
        " && document.querySelector('#password') !== null"
    )
    # The marker distinguishes the new page from the old one, which may match too.
    marker = f"__before_navigation_{time.monotonic_ns()}"
    page.evaluate(f"window.{marker} = true")
    ready = f"window.{marker} === undefined && {_not_null(ready)}"
    page.call("Page.navigate", url=url)
    state = page.wait_for(
        f"({ready}) ? 'ready' : ({login_form}) ? 'login' : null", timeout
    )
    if state == "ready":
        return

    account = running.accounts[username]
    page.fill("#username", username)
    page.fill("#password", account.password)
    page.click("form[action$='/login'] button[type=submit]")
    if account.totp_secret:
        page.wait_for("document.querySelector('#otp')")
        page.fill("#otp", fresh_totp(account.totp_secret))
        page.click("form[action$='/otp'] button[type=submit]")
    page.wait_for(ready, timeout)


def click_at(page: Page, selector: str) -> None:
    """Click the center of the first element matching ``selector`` with the mouse."""
    box = page.evaluate(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
        " if (!e) return null; e.scrollIntoView({block: 'center'});"
        " const r = e.getBoundingClientRect();"
        " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
    )
    if box is None:
        raise AssertionError(f"no element {selector!r} at {page.url()}")
    for kind in ("mousePressed", "mouseReleased"):
        page.call(
            "Input.dispatchMouseEvent",
            type=kind,
            x=box["x"],
            y=box["y"],
            button="left",
            clickCount=1,
        )


def press_control_enter(page: Page) -> None:
    """Press Ctrl+Enter, JupyterLab's shortcut that runs the selected cells in place."""
    key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
    # rawKeyDown sends keydown without a keypress, so no newline is typed
    # into a cell editor.
    page.call("Input.dispatchKeyEvent", type="rawKeyDown", modifiers=CONTROL, **key)
    page.call("Input.dispatchKeyEvent", type="keyUp", modifiers=CONTROL, **key)


def press_save(page: Page) -> None:
    """Press Ctrl+S, JupyterLab's shortcut that saves the current document."""
    key = {"key": "s", "code": "KeyS", "windowsVirtualKeyCode": 83}
    page.call("Input.dispatchKeyEvent", type="rawKeyDown", modifiers=CONTROL, **key)
    page.call("Input.dispatchKeyEvent", type="keyUp", modifiers=CONTROL, **key)


def page_cookie(page: Page, name: str) -> str:
    """Return the value of cookie ``name`` as the page's scripts read it."""
    cookies = str(page.evaluate("document.cookie"))
    for pair in cookies.split("; "):
        key, _, value = pair.partition("=")
        if key == name:
            return value
    raise AssertionError(f"no {name} cookie at {page.url()}: {cookies!r}")


def fetch(
    page: Page,
    method: str,
    path: str,
    *,
    form: Mapping[str, str] | None = None,
    json_body: Any = None,
    xsrf_from_cookie: bool = False,
) -> dict[str, Any]:
    """Send a request with the page's cookies and return its status, URL and text.

    ``form`` is sent URL-encoded and ``json_body`` as JSON. With
    ``xsrf_from_cookie`` the page's ``_xsrf`` cookie goes into the
    ``X-XSRFToken`` header, as JupyterLab's own requests do.
    """
    options: dict[str, Any] = {"method": method, "credentials": "same-origin"}
    headers: dict[str, str] = {}
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if json_body is not None:
        headers["Content-Type"] = "application/json"
        options["body"] = json.dumps(json_body)
    options["headers"] = headers
    script = (
        "(async () => {"
        f" const options = {json.dumps(options)};"
        f" const form = {json.dumps(form)};"
        " if (form !== null) options.body = new URLSearchParams(form).toString();"
        f" if ({json.dumps(xsrf_from_cookie)}) {{"
        "   const cookie = document.cookie.split('; ')"
        "     .find(c => c.startsWith('_xsrf='));"
        "   if (cookie) options.headers['X-XSRFToken'] = cookie.slice(6);"
        " }"
        f" const response = await fetch({json.dumps(path)}, options);"
        " return {status: response.status, url: response.url,"
        " text: await response.text()};"
        "})()"
    )
    return page.evaluate(script)


def wait_until(
    condition: Callable[[], Any], message: str, timeout: float, interval: float = 1.0
) -> Any:
    """Poll ``condition`` until it is truthy and return that value.

    Raise AssertionError with ``message`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (waited {timeout:.0f} s)")
        time.sleep(interval)


def dump_page(page: Page, folder: Path, name: str) -> None:
    """Write a screenshot, the HTML and the URL of ``page`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        shot = page.call("Page.captureScreenshot", format="png")
        (folder / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
    except (RuntimeError, OSError) as exc:
        (folder / f"{name}.png.error.txt").write_text(str(exc))
    try:
        html = page.evaluate("document.documentElement.outerHTML")
        (folder / f"{name}.html").write_text(str(html))
    except RuntimeError as exc:
        (folder / f"{name}.html.error.txt").write_text(str(exc))
    (folder / f"{name}.url.txt").write_text(page.url())


@contextmanager
def dumped_on_failure(pages: Mapping[str, Page], folder: Path) -> Iterator[None]:
    """Dump every page in ``pages`` into ``folder`` if the block raises."""
    try:
        yield
    except BaseException:
        folder.mkdir(parents=True, exist_ok=True)
        for name, page in pages.items():
            try:
                dump_page(page, folder, name)
            except Exception as exc:  # noqa: BLE001 - keep the test's own error
                (folder / f"{name}.dump-failed.txt").write_text(repr(exc))
        raise
