"""A minimal kernel websocket client speaking both Jupyter websocket protocols."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import websocket
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"


@dataclass
class ExecuteResult:
    """The reply and the IOPub messages of one request."""

    reply: dict[str, Any]
    iopub: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(
            msg["content"]["text"]
            for msg in self.iopub
            if msg["header"]["msg_type"] == "stream"
            and msg["content"]["name"] == "stdout"
        )

    def of_type(self, msg_type: str) -> list[dict[str, Any]]:
        return [msg for msg in self.iopub if msg["header"]["msg_type"] == msg_type]


class KernelClient:
    """Connect to ``/api/kernels/ID/channels`` with the v1 or the legacy protocol."""

    def __init__(
        self, base_url: str, token: str, kernel_id: str, protocol: str
    ) -> None:
        self.session_id = uuid.uuid4().hex
        self.protocol = protocol
        url = (
            base_url.replace("http://", "ws://")
            + f"/api/kernels/{kernel_id}/channels?session_id={self.session_id}"
        )
        subprotocols = [V1_PROTOCOL] if protocol == "v1" else None
        self.ws = websocket.create_connection(
            url,
            header=[f"Authorization: token {token}"],
            subprotocols=subprotocols,
            timeout=60,
        )
        if protocol == "v1":
            assert self.ws.getsubprotocol() == V1_PROTOCOL

    def close(self) -> None:
        self.ws.close()

    def send(
        self,
        msg_type: str,
        content: dict[str, Any],
        *,
        channel: str = "shell",
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Send one message and return its msg_id."""
        header = {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "test",
            "session": self.session_id,
            "date": dt.datetime.now(dt.UTC).isoformat(),
            "version": "5.3",
        }
        metadata = metadata or {}
        if self.protocol == "v1":
            parts = [
                json.dumps(part).encode() for part in (header, {}, metadata, content)
            ]
            self.ws.send_binary(serialize_msg_to_ws_v1(parts, channel))
        else:
            message = {
                "header": header,
                "parent_header": {},
                "metadata": metadata,
                "content": content,
                "channel": channel,
                "buffers": [],
            }
            self.ws.send(json.dumps(message))
        return header["msg_id"]

    def receive(self) -> dict[str, Any]:
        frame = self.ws.recv()
        if self.protocol == "v1":
            channel, parts = deserialize_msg_from_ws_v1(frame)
            return {
                "channel": channel,
                "header": json.loads(parts[0]),
                "parent_header": json.loads(parts[1]),
                "content": json.loads(parts[3]),
            }
        return json.loads(frame)

    def execute(
        self,
        code: str,
        *,
        channel: str = "shell",
        cell_id: str | None = None,
        timeout: float = 60,
    ) -> ExecuteResult:
        """Run ``code`` and wait for both its reply and the kernel's idle status."""
        metadata = {"cellId": cell_id} if cell_id else {}
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        msg_id = self.send(
            "execute_request", content, channel=channel, metadata=metadata
        )
        return self.wait_for(msg_id, "execute_reply", timeout)

    def wait_for(
        self, msg_id: str, reply_type: str, timeout: float = 60
    ) -> ExecuteResult:
        reply: dict[str, Any] | None = None
        iopub: list[dict[str, Any]] = []
        idle = False
        deadline = time.monotonic() + timeout
        while reply is None or not idle:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {reply_type} and idle status for {msg_id}")
            msg = self.receive()
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["header"]["msg_type"] == reply_type:
                reply = msg
            elif msg["channel"] == "iopub":
                iopub.append(msg)
                status = msg["content"].get("execution_state")
                idle = idle or (
                    msg["header"]["msg_type"] == "status" and status == "idle"
                )
            if reply is not None and reply_type != "execute_reply":
                idle = True
        return ExecuteResult(reply, iopub)
