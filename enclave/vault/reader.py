"""Random-access, decrypting reader of one vault blob."""

from __future__ import annotations

import io
import os
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.errors import IntegrityError
from enclave.vault._format import (
    HEADER_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    BlobHeader,
    unpack_header,
)

__all__ = ["VaultReader"]


class VaultReader(io.RawIOBase):
    """A read-only, seekable file object over the plaintext of one blob.

    Only the chunks that a read touches are decrypted, and the most recent
    chunk is cached, so sequential reads and small seeks cost one decryption
    per chunk. Every chunk is authenticated before any of its bytes are
    returned. A reader keeps one position, so give each thread its own.

    Raises
    ------
    IntegrityError
        On open, if the header does not match the file; on read, if a chunk
        fails authentication.
    """

    def __init__(self, file: BinaryIO, blob_id: str, data_key: bytes) -> None:
        super().__init__()
        self._file = file
        self._aead = AESGCM(data_key)
        try:
            size = os.fstat(file.fileno()).st_size
            self._header: BlobHeader = unpack_header(file.read(HEADER_SIZE), size)
        except BaseException:
            file.close()
            raise
        if self._header.blob_id != blob_id:
            file.close()
            raise IntegrityError("vault blob is damaged: header names another blob")
        self._position = 0
        self._cached_index = -1
        self._cached_chunk = b""

    @property
    def size(self) -> int:
        """Plaintext size in bytes."""
        return self._header.plaintext_size

    @property
    def chunk_size(self) -> int:
        return self._header.chunk_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}; use 0, 1 or 2")
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._check_open()
        view = memoryview(buffer).cast("B")
        written = 0
        while written < len(view) and self._position < self.size:
            index, start = divmod(self._position, self.chunk_size)
            chunk = self._chunk(index)
            count = min(len(view) - written, len(chunk) - start)
            view[written : written + count] = chunk[start : start + count]
            written += count
            self._position += count
        return written

    def readall(self) -> bytes:
        self._check_open()
        parts = []
        while self._position < self.size:
            index, start = divmod(self._position, self.chunk_size)
            part = self._chunk(index)[start:]
            parts.append(part)
            self._position += len(part)
        return b"".join(parts)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
            self._cached_chunk = b""
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed vault reader")

    def _chunk(self, index: int) -> bytes:
        if index == self._cached_index:
            return self._cached_chunk

        header = self._header
        sealed_size = NONCE_SIZE + header.chunk_plaintext_size(index) + TAG_SIZE
        self._file.seek(header.chunk_offset(index))
        sealed = self._file.read(sealed_size)
        if len(sealed) != sealed_size:
            raise IntegrityError("vault blob is damaged: a chunk is incomplete")
        try:
            chunk = self._aead.decrypt(
                sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], header.chunk_aad(index)
            )
        except InvalidTag as exc:
            raise IntegrityError("vault blob failed its integrity check") from exc

        self._cached_index = index
        self._cached_chunk = chunk
        return chunk
