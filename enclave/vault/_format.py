"""The on-disk layout of a vault blob.

A blob file is a fixed-size header followed by ``total_chunks`` sealed chunks::

    header: magic (8) | format version (u16) | blob id (16) | chunk size (u32)
            | plaintext length (u64) | total chunks (u64)
    chunk:  nonce (12) | AES-256-GCM ciphertext of up to ``chunk_size`` bytes | tag (16)

Every chunk but the last contains exactly ``chunk_size`` plaintext bytes. A blob
always has at least one chunk, so even an empty plaintext has an authenticated
last chunk. The associated data of each chunk is the whole header, the chunk
index and a last-chunk flag: a changed header, a chunk moved to another
position, a dropped final chunk or a file cut short all fail authentication.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from enclave.errors import IntegrityError

MAGIC = b"ENCLVLT\x00"
FORMAT_VERSION = 1
NONCE_SIZE = 12  # 96-bit GCM nonce, random per chunk
TAG_SIZE = 16
CHUNK_OVERHEAD = NONCE_SIZE + TAG_SIZE
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20

_HEADER = struct.Struct(">8sH16sIQQ")
HEADER_SIZE = _HEADER.size
_CHUNK_AAD = struct.Struct(">QB")


@dataclass(frozen=True)
class BlobHeader:
    """The header of one blob file."""

    blob_id: str
    chunk_size: int
    plaintext_size: int
    total_chunks: int

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            bytes.fromhex(self.blob_id),
            self.chunk_size,
            self.plaintext_size,
            self.total_chunks,
        )

    @property
    def file_size(self) -> int:
        """Expected size of the blob file in bytes."""
        return HEADER_SIZE + self.plaintext_size + self.total_chunks * CHUNK_OVERHEAD

    def chunk_offset(self, index: int) -> int:
        """Byte offset of chunk ``index`` inside the blob file."""
        return HEADER_SIZE + index * (self.chunk_size + CHUNK_OVERHEAD)

    def chunk_plaintext_size(self, index: int) -> int:
        if index < self.total_chunks - 1:
            return self.chunk_size
        return self.plaintext_size - (self.total_chunks - 1) * self.chunk_size

    def chunk_aad(self, index: int) -> bytes:
        """Associated data of chunk ``index``: header, index and last-chunk flag."""
        last = index == self.total_chunks - 1
        return self.pack() + _CHUNK_AAD.pack(index, int(last))


def count_chunks(plaintext_size: int, chunk_size: int) -> int:
    """Number of chunks of a plaintext; at least one, so the last flag always exists."""
    return max(1, -(-plaintext_size // chunk_size))


def unpack_header(data: bytes, file_size: int) -> BlobHeader:
    """Parse a header and check it against the file size; raise IntegrityError."""
    if len(data) != HEADER_SIZE:
        raise IntegrityError("vault blob is damaged: header is incomplete")
    magic, version, raw_id, chunk_size, plaintext_size, total = _HEADER.unpack(data)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise IntegrityError(
            "vault blob is damaged: not a vault blob of a known version"
        )
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise IntegrityError("vault blob is damaged: invalid header")
    if total != count_chunks(plaintext_size, chunk_size):
        raise IntegrityError("vault blob is damaged: invalid header")

    header = BlobHeader(raw_id.hex(), chunk_size, plaintext_size, total)
    # A truncated file, a dropped chunk or trailing data changes the size.
    if header.file_size != file_size:
        raise IntegrityError(
            "vault blob is damaged: file size does not match its header"
        )
    return header
