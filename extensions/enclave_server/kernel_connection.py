"""Kernel websocket connection that audits code before the kernel receives it.

Every message that makes the kernel run code is posted to the audit collector
first and forwarded only after the collector has stored it. If the collector
cannot be reached, does not reply in time or rejects the event, the message
is dropped and the client gets an error reply for it, so a cell never runs
unaudited through this server.

Messages that run code: ``execute_request`` on any channel (ipykernel also
executes it when it arrives on the control channel) and the debugger's
``evaluate``, ``setExpression`` and ``setVariable`` requests. Both websocket
protocols are handled: ``v1.kernel.websocket.jupyter.org`` (binary frames)
and the legacy JSON protocol.

In the other direction, every message from the kernel is checked against the
download policy before it reaches the browser: all of its header, metadata,
content and buffers, whatever its type. A message that contains a blocked
format, or is larger than the policy's limit, is replaced by a note saying
why, and the block is audited once per request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import typing as t
from dataclasses import dataclass

from jupyter_client.jsonutil import json_default
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import (
    ZMQChannelsWebsocketConnection,
)
from tornado.websocket import WebSocketClosedError

from enclave.errors import AuditUnavailable

from .audit_client import AuditClient, utc_timestamp
from .contents import record_blocked_download
from .download_policy import BlockedFile, DownloadPolicy

__all__ = ["AuditedKernelWebsocketConnection", "KernelRequest", "code_of_request"]

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
AUDIT_ERROR_NAME = "AuditUnavailable"

# Web application settings that the extension fills in (see app.py).
AUDIT_CLIENT_SETTING = "enclave_audit_client"
MAX_CODE_BYTES_SETTING = "enclave_max_code_bytes"
DOWNLOAD_POLICY_SETTING = "enclave_download_policy"

OUTPUT_BLOCKED_NAME = "OutputBlocked"
_HEADER_FIELDS = ("msg_id", "msg_type", "session", "username", "date", "version")
_MAX_HEADER_CHARS = 256
_MAX_REMEMBERED_BLOCKS = 1024

_DEBUG_COMMANDS_WITH_CODE = {"evaluate", "setExpression", "setVariable"}


@dataclass(frozen=True)
class KernelRequest:
    """The parts of an incoming websocket message that the audit needs."""

    channel: str
    header: dict[str, t.Any]
    metadata: dict[str, t.Any]
    content: dict[str, t.Any]

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))


def code_of_request(request: KernelRequest) -> str | None:
    """Return the code a request makes the kernel run, or None if it runs none."""
    content = request.content
    if request.msg_type == "execute_request":
        code = content.get("code", "")
        if not isinstance(code, str):
            raise ValueError("execute_request content.code is not a string")
        return code

    if request.msg_type == "debug_request":
        command = content.get("command")
        if command not in _DEBUG_COMMANDS_WITH_CODE:
            return None
        arguments = content.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise ValueError("debug_request content.arguments is not an object")
        if command == "evaluate":
            return str(arguments.get("expression", ""))
        if command == "setExpression":
            return f"{arguments.get('expression', '')} = {arguments.get('value', '')}"
        return f"{arguments.get('name', '')} = {arguments.get('value', '')}"
    return None


class AuditedKernelWebsocketConnection(ZMQChannelsWebsocketConnection):
    """A kernel websocket connection that audits each code request before sending it.

    Messages on one channel keep their order: while a request on a channel
    waits for the collector, later messages on that channel wait behind it.
    """

    def __init__(self, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        # The last audit-then-forward task of each channel.
        self._pending: dict[str, asyncio.Future[None]] = {}
        # Requests whose blocked output is already audited, and the tasks
        # that post those events.
        self._audited_blocks: set[str] = set()
        self._audit_tasks: set[asyncio.Future[None]] = set()

    def handle_incoming_message(self, incoming_msg: str) -> None:
        """Audit a code request and then forward it, or forward other messages."""
        if not self.channels:
            super().handle_incoming_message(incoming_msg)
            return

        try:
            request = self._parse(incoming_msg)
            code = code_of_request(request)
        except (LookupError, TypeError, ValueError) as exc:
            # Upstream would raise on this message too. Dropping it keeps a
            # message that cannot be checked away from the kernel.
            self.log.warning(
                "Dropped a malformed message for kernel %s: %s", self.kernel_id, exc
            )
            return

        previous = self._pending.get(request.channel)
        if code is None and (previous is None or previous.done()):
            super().handle_incoming_message(incoming_msg)
            return
        self._pending[request.channel] = asyncio.ensure_future(
            self._audit_then_forward(incoming_msg, request, code, previous)
        )

    async def _audit_then_forward(
        self,
        incoming_msg: str,
        request: KernelRequest,
        code: str | None,
        previous: asyncio.Future[None] | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if code is not None:
            try:
                await self._audit(request, code)
            except AuditUnavailable as exc:
                self.log.error(
                    "Did not run %s %s on kernel %s because the audit failed: %s",
                    request.msg_type,
                    request.header.get("msg_id"),
                    self.kernel_id,
                    exc,
                )
                self._reply_not_run(request, str(exc))
                return
            except Exception:
                # A bug here must not let the request through, nor leave the
                # client waiting for a reply that never comes.
                self.log.exception(
                    "Did not run %s %s on kernel %s because the audit raised",
                    request.msg_type,
                    request.header.get("msg_id"),
                    self.kernel_id,
                )
                self._reply_not_run(request, "internal error in the audit hook")
                return
        super().handle_incoming_message(incoming_msg)

    async def _audit(self, request: KernelRequest, code: str) -> None:
        settings = self.websocket_handler.settings
        client: AuditClient | None = settings.get(AUDIT_CLIENT_SETTING)
        if client is None:
            raise AuditUnavailable(
                "the enclave_server extension is not loaded, so no audit collector "
                "is configured"
            )
        max_code_bytes = settings.get(MAX_CODE_BYTES_SETTING)
        size = len(code.encode("utf-8", "surrogatepass"))
        if max_code_bytes is not None and size > max_code_bytes:
            raise AuditUnavailable(
                f"the cell is {size} bytes, larger than the audit limit of "
                f"{max_code_bytes} bytes; split it into smaller cells"
            )

        cell_id = request.metadata.get("cellId")
        session_id = request.header.get("session")
        await client.post_event(
            {
                "action": "cell.execute",
                "kernel_id": str(self.kernel_id),
                "session_id": session_id if isinstance(session_id, str) else None,
                "cell_id": cell_id if isinstance(cell_id, str) else None,
                "msg_id": str(request.header["msg_id"]),
                "msg_type": request.msg_type,
                "channel": request.channel,
                "code": code,
                "at": utc_timestamp(),
            }
        )

    def _parse(self, incoming_msg: str | bytes) -> KernelRequest:
        if self.subprotocol == V1_PROTOCOL:
            channel, parts = deserialize_msg_from_ws_v1(incoming_msg)
            header = self.session.unpack(parts[0])
            metadata = self.session.unpack(parts[2])
            content = self.session.unpack(parts[3])
        else:
            if isinstance(incoming_msg, bytes):
                msg = deserialize_binary_message(incoming_msg)
            else:
                msg = json.loads(incoming_msg)
            # Upstream sends a message without a channel to the shell channel.
            channel = msg.get("channel") or "shell"
            header = msg["header"]
            metadata = msg.get("metadata") or {}
            content = msg.get("content") or {}
        if not isinstance(header, dict) or not isinstance(content, dict):
            raise ValueError("header or content is not an object")
        if not isinstance(metadata, dict):
            metadata = {}
        if "msg_id" not in header:
            raise ValueError("header has no msg_id")
        return KernelRequest(str(channel), header, metadata, content)

    def _reply_not_run(self, request: KernelRequest, reason: str) -> None:
        """Send the client the replies of a request that was dropped."""
        evalue = (
            f"This code was not run because the audit trail did not record it: {reason}"
        )
        parent = request.header
        if request.msg_type == "execute_request":
            error = {
                "ename": AUDIT_ERROR_NAME,
                "evalue": evalue,
                "traceback": [f"{AUDIT_ERROR_NAME}: {evalue}"],
            }
            replies = [
                ("iopub", "status", {"execution_state": "busy"}),
                ("iopub", "error", error),
                (
                    request.channel,
                    "execute_reply",
                    {"status": "error", "execution_count": None, **error},
                ),
                ("iopub", "status", {"execution_state": "idle"}),
            ]
        else:
            replies = [
                (
                    request.channel,
                    "debug_reply",
                    {
                        "type": "response",
                        "request_seq": request.content.get("seq"),
                        "success": False,
                        "command": request.content.get("command"),
                        "message": evalue,
                    },
                )
            ]

        for channel, msg_type, content in replies:
            msg = self.session.msg(msg_type, content=content, parent=parent)
            self._send_to_client(channel, msg)

    def _on_zmq_reply(self, stream: t.Any, msg_list: t.Any) -> None:
        """Send a kernel message to the client if the download policy allows it."""
        channel = getattr(stream, "channel", None) or "iopub"
        try:
            header, parent, blocked = self._check_outgoing(msg_list)
        except Exception:
            # Fail closed: a message that cannot be checked is not sent.
            self.log.exception(
                "Did not send a message of kernel %s that could not be checked",
                self.kernel_id,
            )
            header, parent = {}, {}
            blocked = BlockedFile(
                f"kernels/{self.kernel_id}", "it could not be checked (internal error)"
            )
        if blocked is None:
            super()._on_zmq_reply(stream, msg_list)
            return
        if stream.closed():
            return
        self._send_blocked_notice(channel, header, parent, blocked)

    def _check_outgoing(
        self, msg_list: t.Any
    ) -> tuple[dict[str, t.Any], dict[str, t.Any], BlockedFile | None]:
        """Return the header, parent header and block of one kernel message."""
        policy = self.websocket_handler.settings.get(DOWNLOAD_POLICY_SETTING)
        if not isinstance(policy, DownloadPolicy):
            policy = _default_policy()
        if isinstance(msg_list, dict):  # the legacy protocol deserialized it
            parts = [
                msg_list.get(name)
                for name in ("header", "parent_header", "metadata", "content")
            ]
            buffers = [bytes(buffer) for buffer in msg_list.get("buffers") or []]
            size = len(json.dumps(parts, default=json_default)) + sum(
                len(buffer) for buffer in buffers
            )
        else:
            frames = [
                frame.bytes if hasattr(frame, "bytes") else bytes(frame)
                for frame in msg_list
            ]
            size = sum(len(frame) for frame in frames)
            if size > policy.max_message_bytes:
                parts = [self.session.unpack(frame) for frame in frames[:2]]
            else:
                parts = [self.session.unpack(frame) for frame in frames[:4]]
            buffers = frames[4:]
        header = parts[0] if isinstance(parts[0], dict) else {}
        parent = parts[1] if isinstance(parts[1], dict) else {}
        msg_type = _clean_header(header).get("msg_type", "message")
        path = f"kernels/{self.kernel_id}/{msg_type}"
        return header, parent, policy.check_message(path, parts, buffers, size)

    def _send_blocked_notice(
        self,
        channel: str,
        header: dict[str, t.Any],
        parent: dict[str, t.Any],
        blocked: BlockedFile,
    ) -> None:
        """Send a note in place of a blocked message and audit the first per request."""
        parent = _clean_header(parent)
        msg_type = _clean_header(header).get("msg_type", "")
        text = (
            f"[enclave] Output of the kernel was not sent because {blocked.reason}. "
            "Video, DICOM, array, archive, image and other binary data do not "
            "leave the enclave through the notebook server; write results to a "
            "file and request an export through the airlock."
        )
        self.log.warning(
            "Blocked a %s message of kernel %s for request %s: %s",
            msg_type,
            self.kernel_id,
            parent.get("msg_id"),
            blocked.reason,
        )
        if msg_type.endswith("_reply") and channel != "iopub":
            content = {
                "status": "error",
                "ename": OUTPUT_BLOCKED_NAME,
                "evalue": text,
                "traceback": [text],
            }
            msg = self.session.msg(msg_type, content=content, parent=parent)
            self._send_to_client(channel, msg)
        else:
            content = {"name": "stderr", "text": text + "\n"}
            msg = self.session.msg("stream", content=content, parent=parent)
            self._send_to_client("iopub", msg)

        request_id = str(parent.get("msg_id", ""))
        if request_id in self._audited_blocks:
            return
        if len(self._audited_blocks) >= _MAX_REMEMBERED_BLOCKS:
            self._audited_blocks.clear()
        self._audited_blocks.add(request_id)
        client = self.websocket_handler.settings.get(AUDIT_CLIENT_SETTING)
        task = asyncio.ensure_future(
            record_blocked_download(client, blocked, "kernel")
        )
        self._audit_tasks.add(task)
        task.add_done_callback(self._audit_tasks.discard)

    def _send_to_client(self, channel: str, msg: dict[str, t.Any]) -> None:
        try:
            if self.subprotocol == V1_PROTOCOL:
                frame = serialize_msg_to_ws_v1(msg, channel, self.session.pack)
                self.write_message(frame, binary=True)
            else:
                msg["channel"] = channel
                self.write_message(json.dumps(msg, default=json_default))
        except WebSocketClosedError:
            self.log.warning(
                "Client of kernel %s left before its error reply was sent",
                self.kernel_id,
            )


@functools.cache
def _default_policy() -> DownloadPolicy:
    """Return the default policy, built once because it compiles the scanner."""
    return DownloadPolicy()


def _clean_header(header: dict[str, t.Any]) -> dict[str, str]:
    """Return the routing fields of a kernel's header, as short strings.

    The kernel writes its headers itself, so a blocked message's header is
    cut down before it is sent back as the parent of the note.
    """
    return {
        name: str(header[name])[:_MAX_HEADER_CHARS]
        for name in _HEADER_FIELDS
        if isinstance(header.get(name), str)
    }
