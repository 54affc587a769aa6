"""Signing in with headless Chromium, so that cookies, redirects and the
login page's Content-Security-Policy are checked by a real browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from enclave.hub.launch import Running
from tests.fixtures.hub import become_subreaper, free_ports, reap_zombie

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (shutil.which("chromium") and shutil.which("chromedriver")),
        reason="needs the chromium and chromium-driver packages",
    ),
]


class Browser:
    """A headless Chromium session driven over the W3C WebDriver protocol."""

    def __init__(self, driver_url: str) -> None:
        options = {
            "binary": shutil.which("chromium"),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu"],
        }
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": options,
        }
        response = requests.post(
            f"{driver_url}/session",
            json={"capabilities": {"alwaysMatch": capabilities}},
            timeout=120,
        )
        response.raise_for_status()
        self.url = f"{driver_url}/session/{response.json()['value']['sessionId']}"

    def _call(self, method: str, path: str, body: dict | None = None) -> object:
        response = requests.request(method, f"{self.url}{path}", json=body, timeout=120)
        response.raise_for_status()
        return response.json()["value"]

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def current_url(self) -> str:
        return str(self._call("GET", "/url"))

    def type_into(self, css: str, text: str) -> None:
        element = self._call(
            "POST", "/element", {"using": "css selector", "value": css}
        )
        element_id = next(iter(element.values()))
        self._call("POST", f"/element/{element_id}/value", {"text": text})

    def click(self, css: str) -> None:
        element = self._call(
            "POST", "/element", {"using": "css selector", "value": css}
        )
        element_id = next(iter(element.values()))
        self._call("POST", f"/element/{element_id}/click", {})

    def close(self) -> None:
        requests.delete(self.url, timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    become_subreaper()
    (port,) = free_ports(1)
    driver = subprocess.Popen(
        ["chromedriver", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    driver_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{driver_url}/status", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "chromedriver did not start"
                time.sleep(0.2)
        session = Browser(driver_url)
        try:
            yield session
        finally:
            session.close()
    finally:
        driver.terminate()
        driver.wait(timeout=30)
        _reap_browser_zombies()


def _reap_browser_zombies() -> None:
    # Chromium's helper processes outlive chromedriver and are reparented here.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = False
        for entry in Path("/proc").iterdir():
            try:
                stat_line = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat_line[stat_line.find("(") + 1 : stat_line.rfind(")")]
            fields = stat_line.rsplit(")", 1)[1].split()
            if name.startswith("chrom") and int(fields[1]) == os.getpid():
                waiting = True
                if fields[0] == "Z":
                    reap_zombie(int(entry.name))
        if not waiting:
            return
        time.sleep(0.2)


def test_browser_login_reaches_lab(hub: Running, browser: Browser) -> None:
    browser.open(f"{hub.hub_url}/hub/login")
    login_page = browser.current_url()
    browser.type_into("#username", "dave")
    browser.type_into("#password", hub.accounts["dave"].password)
    browser.click("button[type=submit]")

    deadline = time.monotonic() + 120
    while "/user/dave/lab" not in browser.current_url():
        assert time.monotonic() < deadline, browser.current_url()
        time.sleep(0.5)

    assert login_page.startswith(f"{hub.issuer}/interaction/")
