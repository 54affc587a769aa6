"""Client of the audit collector, which listens for HTTP on a Unix socket.

The collector identifies the poster by the socket's peer credentials, so the
events sent here carry no user name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from enclave.errors import AuditUnavailable

__all__ = ["AuditClient", "AuditReceipt", "utc_timestamp"]

logger = logging.getLogger(__name__)

_MAX_RESPONSE_BYTES = 64 * 1024


def utc_timestamp() -> str:
    """Return the current time as an ISO 8601 string in UTC."""
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass(frozen=True)
class AuditReceipt:
    """The collector's acknowledgement: the record's place in the hash chain."""

    seq: int
    hash: str


@dataclass(frozen=True)
class AuditClient:
    """Post audit events to the collector at ``socket_path``.

    Parameters
    ----------
    socket_path
        Path of the collector's Unix socket.
    timeout
        Seconds to wait for the collector's reply before giving up.
    """

    socket_path: str
    timeout: float = 5.0

    async def post_event(self, event: dict[str, Any]) -> AuditReceipt:
        """Send one event and return its receipt.

        Raises
        ------
        AuditUnavailable
            If the collector cannot be reached, does not reply in time or does
            not store the event. The message names the cause.
        """
        body = json.dumps(event).encode("utf-8")
        try:
            status, reply = await asyncio.wait_for(self._request(body), self.timeout)
        except TimeoutError as exc:
            raise AuditUnavailable(
                f"the audit collector at {self.socket_path} did not reply within "
                f"{self.timeout:g} s"
            ) from exc
        except OSError as exc:
            raise AuditUnavailable(
                f"the audit collector at {self.socket_path} is unreachable: "
                f"{exc.strerror or exc}"
            ) from exc

        if status != 201:
            message = reply.get("message") if isinstance(reply, dict) else None
            raise AuditUnavailable(
                f"the audit collector did not store the event (HTTP {status}: "
                f"{message or 'no message'})"
            )
        try:
            return AuditReceipt(seq=int(reply["seq"]), hash=str(reply["hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditUnavailable(
                "the audit collector replied without a record sequence number"
            ) from exc

    async def _request(self, body: bytes) -> tuple[int, Any]:
        reader, writer = await asyncio.open_unix_connection(self.socket_path)
        try:
            head = (
                "POST /v1/events HTTP/1.1\r\n"
                "Host: enclave-audit\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + body)
            await writer.drain()
            response = b""
            while len(response) <= _MAX_RESPONSE_BYTES:
                chunk = await reader.read(_MAX_RESPONSE_BYTES)
                if not chunk:
                    break
                response += chunk
        finally:
            writer.close()
        return _parse_response(response)


def _parse_response(response: bytes) -> tuple[int, Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise OSError(f"invalid HTTP status line {status_line!r}")
    try:
        reply = json.loads(body) if body else None
    except ValueError:
        reply = None
    return int(parts[1]), reply
