"""The data broker: the only process that decrypts and decodes assets.

It listens on a Unix socket, identifies each caller from the socket's peer
credentials, checks that the caller's project may read the dataset today,
records every access in the audit trail and only then sends frames.
Start it with ``enclave broker serve``.
"""

from __future__ import annotations

from enclave.broker.config import (
    MAX_BYTES_PER_REQUEST,
    MAX_FRAMES_PER_REQUEST,
    BrokerConfig,
)

__all__ = ["MAX_BYTES_PER_REQUEST", "MAX_FRAMES_PER_REQUEST", "BrokerConfig"]
