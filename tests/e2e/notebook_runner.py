"""Run notebook cells in a kernel of a user's server, through the hub's proxy.

The client talks to JupyterLab's own REST and websocket routes with the
browser's cookies, as the JupyterLab front end does, so every request passes
the proxy, the server's hub authentication and the enclave extension.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import requests
import websocket

TIMEOUT = 300


@dataclass
class CellRun:
    """What one executed cell sent back."""

    code: str
    status: str
    stdout: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)


class ServerKernel:
    """A kernel started on ``owner``'s server with the logged-in ``session``."""

    def __init__(
        self, hub_url: str, session: requests.Session, owner: str, kernel_name: str
    ) -> None:
        self.base = f"{hub_url}/user/{owner}"
        self.session = session
        self.headers = {"X-XSRFToken": self._xsrf_token(f"/user/{owner}/")}
        response = session.post(
            f"{self.base}/api/kernels",
            json={"name": kernel_name},
            headers=self.headers,
            timeout=TIMEOUT,
        )
        response.raise_for_status()
        self.kernel_id = response.json()["id"]
        self.session_id = uuid.uuid4().hex
        cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
        ws_url = self.base.replace("http://", "ws://")
        self.ws = websocket.create_connection(
            f"{ws_url}/api/kernels/{self.kernel_id}/channels"
            f"?session_id={self.session_id}",
            header=[f"Cookie: {cookies}"],
            origin=hub_url,
            timeout=TIMEOUT,
        )

    def _xsrf_token(self, path: str) -> str:
        # The server sets its own _xsrf cookie on the first page it serves.
        self.session.get(f"{self.base}/lab", timeout=TIMEOUT)
        for cookie in self.session.cookies:
            if cookie.name == "_xsrf" and cookie.path == path:
                return cookie.value
        raise AssertionError(f"the user server set no _xsrf cookie for {path}")

    def execute(self, code: str, timeout: float = TIMEOUT) -> CellRun:
        msg_id = uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": "",
                "session": self.session_id,
                "date": "",
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }
        self.ws.send(json.dumps(request))

        run = CellRun(code=code, status="")
        idle = False
        deadline = time.monotonic() + timeout
        while not (run.status and idle):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"cell did not finish within {timeout} s: {code!r}"
                )
            message = json.loads(self.ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            content = message["content"]
            if kind == "execute_reply":
                run.status = content["status"]
                if content["status"] == "error":
                    run.errors.append(content)
            elif kind == "stream" and content["name"] == "stdout":
                run.stdout += content["text"]
            elif kind == "error":
                run.errors.append(content)
            elif kind in ("execute_result", "display_data"):
                run.outputs.append(content)
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        return run

    def shutdown(self) -> None:
        self.ws.close()
        self.session.delete(
            f"{self.base}/api/kernels/{self.kernel_id}",
            headers=self.headers,
            timeout=TIMEOUT,
        )


def code_cells(path: Path) -> list[str]:
    """Return the sources of the code cells of the notebook at ``path``."""
    notebook = nbformat.read(path, as_version=4)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]
