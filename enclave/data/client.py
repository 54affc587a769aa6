"""HTTP client of the data broker over its Unix socket."""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np

from enclave.errors import (
    AuditUnavailable,
    ConfigurationError,
    EnclaveError,
    NotFound,
    PermissionDenied,
    ValidationError,
)

__all__ = ["BrokerClient", "default_socket_path"]

SOCKET_ENV = "ENCLAVE_BROKER_SOCKET"

# Status of a broker response -> error raised in the researcher's process.
STATUS_ERRORS: dict[int, type[EnclaveError]] = {
    400: ValidationError,
    403: PermissionDenied,
    404: NotFound,
    503: AuditUnavailable,
}

# Seconds to wait for the broker; the first read of an asset decrypts it.
DEFAULT_TIMEOUT = 300.0


def default_socket_path() -> Path:
    """Return the broker socket from ``ENCLAVE_BROKER_SOCKET`` or the settings."""
    env = os.environ.get(SOCKET_ENV)
    if env:
        return Path(env)
    from enclave.config import load_settings

    return load_settings().broker_socket


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class BrokerClient:
    """Talks to the data broker; the broker identifies this process's OS user.

    Each request uses its own connection, so one client can be shared by the
    threads of a Dask scheduler or pickled into DataLoader workers.

    Parameters
    ----------
    socket_path : str or Path, optional
        Broker socket; default ``ENCLAVE_BROKER_SOCKET``, else the
        ``broker.sock`` of the enclave settings.
    timeout : float
        Seconds to wait for one response.

    Examples
    --------
    >>> client = BrokerClient()  # doctest: +SKIP
    >>> [d["name"] for d in client.list_datasets()]  # doctest: +SKIP
    ['carphone-study']
    """

    def __init__(
        self, socket_path: str | Path | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path else default_socket_path()
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"BrokerClient({str(self.socket_path)!r})"

    def health(self) -> dict[str, Any]:
        """Return the broker's health document (``{"status": "ok"}``)."""
        return json.loads(self._get("/health")[0])

    def list_datasets(self) -> list[dict[str, Any]]:
        """Return the datasets this user may read today, each with its project."""
        return json.loads(self._get("/v1/datasets")[0])["datasets"]

    def describe(self, dataset: str) -> dict[str, Any]:
        """Return a dataset's items with shape, fps and per-frame times in seconds."""
        return json.loads(self._get(f"/v1/datasets/{quote(dataset, safe='')}")[0])

    def read_frames(self, dataset: str, path: str, start: int, stop: int) -> np.ndarray:
        """Read frames ``[start, stop)`` of one item as uint8 (n, height, width, 3).

        Raises
        ------
        ValidationError
            If the range is out of bounds or over the broker's per-request limit.
        PermissionDenied
            If this user's project may not read the dataset (the reason is in
            the message).
        AuditUnavailable
            If the broker could not record the read, so it sent nothing.
        """
        query = urlencode({"start": int(start), "stop": int(stop)})
        url = (
            f"/v1/datasets/{quote(dataset, safe='')}/items/"
            f"{quote(path, safe='/')}/frames?{query}"
        )
        body, headers = self._get(url)

        shape = tuple(int(n) for n in headers["X-Enclave-Shape"].split(","))
        frames = np.frombuffer(body, dtype=np.uint8)
        if frames.size != int(np.prod(shape)):
            raise EnclaveError(
                f"broker sent {frames.size} bytes for frames of shape {shape}, "
                f"expected {int(np.prod(shape))}"
            )
        return frames.reshape(shape)

    def _get(self, url: str) -> tuple[bytearray, http.client.HTTPMessage]:
        connection = _UnixHTTPConnection(str(self.socket_path), self.timeout)
        try:
            try:
                connection.request("GET", url)
                response = connection.getresponse()
            except FileNotFoundError as exc:
                raise ConfigurationError(
                    f"no data broker socket at {self.socket_path}; start the broker "
                    f"('enclave broker serve') or set {SOCKET_ENV}"
                ) from exc
            except OSError as exc:
                raise EnclaveError(
                    f"cannot reach the data broker at {self.socket_path}: {exc}"
                ) from exc
            body = _read_body(response)
        finally:
            connection.close()

        if response.status != 200:
            raise _error_from_response(response.status, body)
        return body, response.headers


def _read_body(response: http.client.HTTPResponse) -> bytearray:
    # Read into a bytearray so that the frames built on it are writable
    # without another copy.
    length = response.getheader("Content-Length")
    if length is None:
        return bytearray(response.read())
    body = bytearray(int(length))
    view = memoryview(body)
    filled = 0
    while filled < len(body):
        count = response.readinto(view[filled:])
        if not count:
            raise EnclaveError(
                f"broker response ended after {filled} of {len(body)} bytes"
            )
        filled += count
    return body


def _error_from_response(status: int, body: bytes | bytearray) -> EnclaveError:
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        message = bytes(body[:200]).decode("utf-8", "replace")
    cls = STATUS_ERRORS.get(status, EnclaveError)
    return cls(
        f"{message} (broker status {status})" if cls is EnclaveError else message
    )
