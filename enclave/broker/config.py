"""Limits and settings of the data broker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DECODER_CACHE_BYTES",
    "DECODER_CACHE_ENTRIES",
    "DECODE_THREADS",
    "DESTROYED_CHECK_INTERVAL_S",
    "MAX_BYTES_PER_REQUEST",
    "MAX_FRAMES_PER_REQUEST",
    "BrokerConfig",
]

# One request decodes at most this many frames, so that a single reader
# cannot hold a decode thread for long while others wait.
MAX_FRAMES_PER_REQUEST = 256

# The decoded frames of one request are in the broker's memory at least twice
# (the array and the response buffer), so this bounds what one request pins.
# 256 MiB is 43 frames of 1920x1080 RGB or 3,530 frames of 176x144.
MAX_BYTES_PER_REQUEST = 256 * 1024 * 1024

# Decrypted assets kept in memory with their open decoder. Opening an asset
# decrypts it and indexes its key frames, which costs far more than decoding
# one chunk. A notebook reads a few clips at a time, so a few entries suffice.
DECODER_CACHE_ENTRIES = 8

# Plaintext bytes the decoder cache may hold in total. The entry in use is
# kept even when it alone is larger.
DECODER_CACHE_BYTES = 1024 * 1024 * 1024

# Seconds between checks that drop destroyed assets from the decoder cache,
# so that plaintext does not outlive its data key in memory for longer.
DESTROYED_CHECK_INTERVAL_S = 60

# Threads that decrypt, decode and query the catalog, so that the IOLoop
# keeps accepting requests while frames decode.
DECODE_THREADS = 4


@dataclass(frozen=True)
class BrokerConfig:
    """Settings of one broker process."""

    socket_path: Path
    """Unix socket the broker listens on; callers are identified by SO_PEERCRED."""
    max_frames_per_request: int = MAX_FRAMES_PER_REQUEST
    """Frames one ``/frames`` request may ask for."""
    max_bytes_per_request: int = MAX_BYTES_PER_REQUEST
    """Bytes of decoded frames one ``/frames`` request may ask for."""
    decoder_cache_entries: int = DECODER_CACHE_ENTRIES
    """Decrypted assets kept open in memory."""
    decoder_cache_bytes: int = DECODER_CACHE_BYTES
    """Plaintext bytes the decoder cache may hold."""
    decode_threads: int = DECODE_THREADS
    """Worker threads for decryption, decoding and catalog queries."""
    destroyed_check_interval_s: float = DESTROYED_CHECK_INTERVAL_S
    """Seconds between checks that drop destroyed assets from memory."""
