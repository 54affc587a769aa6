"""Search a whole payload for blocked formats, raw or encoded as text.

A payload is the content of a file or the parts of one kernel message. The
scanner looks for:

- the magic bytes of a blocked format at the start, and the specific
  patterns of :data:`~enclave_server.formats.EMBEDDED_SIGNATURES` anywhere;
- bytes that are neither text nor a recognised format (the ``binary`` kind),
  such as raw pixels, in a file or in text whose characters represent bytes
  (``bytes.decode("latin-1")``);
- runs of base64 (standard or URL-safe, also wrapped over lines), hex (plain,
  ``0x``-prefixed or separated by spaces, colons or commas), Python bytes
  escapes (``\\x89PNG...``, as ``print(some_bytes)`` shows them) and lists of
  decimal byte values. Each run is decoded and scanned again, nested up to
  :data:`MAX_NESTING` levels.

NOTE: this stops the encodings above, not every encoding. Code in a kernel
can still turn data into text the scanner does not decode, for example with
a cipher or in runs shorter than :data:`MIN_RUN_CHARS`. The size limits and
the audit trail of executed code are the controls for that case.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .formats import (
    EMBEDDED_SIGNATURES,
    SNIFF_BYTES,
    FileKind,
    sniff_format,
    sniff_transport_stream,
)

__all__ = [
    "MAX_NESTING",
    "MIN_BINARY_BYTES",
    "MIN_RUN_CHARS",
    "Finding",
    "PayloadScanner",
    "flatten_json",
]

MIN_RUN_CHARS = 16
"""Shortest run of base64 or hex characters, per line or group, that is decoded."""

MIN_BINARY_BYTES = 512
"""Decoded runs of at least this many bytes that are not text count as binary.

Shorter runs, such as printed SHA-256 digests, are reported only if they
contain the magic of a blocked format.
"""

MAX_NESTING = 3
"""How many times a decoded run that is itself text is decoded again."""

_B64_RUN = re.compile(
    r"[A-Za-z0-9+/_-]{%d,}(?:={0,2}\s+[A-Za-z0-9+/_-]{%d,})*={0,2}"
    % (MIN_RUN_CHARS, MIN_RUN_CHARS)
)
# The leading lookahead changes no match but lets the regex engine skip to a
# possible first character. One timing on 528 kB of text output: 11 ms, not 29.
_HEX_RUN = re.compile(
    r"(?=[0-9a-fA-F\\])(?<![0-9a-fA-F])"
    r"(?:(?:0[xX]|\\x)?[0-9a-fA-F]{2}[ \t,:;]{0,3}){%d,}" % (MIN_RUN_CHARS // 2)
)
_HEX_NOISE = re.compile(r"0[xX]|\\x|[ \t,:;]")
_HEX_SEPARATORS = re.compile(r"[ \t,:;]+")
# Hex lengths of MD5, SHA-1, SHA-224, SHA-256, SHA-384 and SHA-512 digests.
_DIGEST_HEX_CHARS = frozenset({32, 40, 56, 64, 96, 128})
_ESCAPED_RUN = re.compile(
    r"(?:\\x[0-9a-fA-F]{2}|\\[0-7]{1,3}|\\[\\'\"abfnrtv]|[ -\[\]-~])+"
)
_DECIMAL_RUN = re.compile(r"\b(?:\d{1,3}[\s,;\[\]()]+){15,}\d{1,3}\b")
_WHITESPACE = re.compile(r"\s+")
_COMBINED_SEARCH_BYTES = 4096
_HEX_DIGITS = frozenset(string.hexdigits)
_HEX_LETTERS = frozenset("abcdefABCDEF")
_UPPER = frozenset(string.ascii_uppercase)
_LOWER = frozenset(string.ascii_lowercase)
_DIGITS_OR_SIGNS = frozenset(string.digits + "+/-_")

# Characters that do not occur in text: C0 controls other than whitespace,
# backspace and the escape of terminal colours, and C1 controls.
_CONTROL_CHARS = re.compile(r"[\x00-\x07\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_LATIN1_HIGH = re.compile(r"[\xa0-\xff]")
# Lone surrogates that bytes.decode(errors="surrogateescape") makes of bytes.
_ESCAPED_BYTES = re.compile(r"[\udc80-\udcff]")
_SURROGATE_TO_BYTE = {0xDC00 + byte: byte for byte in range(0x80, 0x100)}


@dataclass(frozen=True)
class Finding:
    """A blocked format found in a payload, and how it was encoded there."""

    format: str
    kind: FileKind
    encoding: str = ""
    """Empty for raw bytes at the start, else where or how it was found."""

    def describe(self) -> str:
        """Return the finding in words, such as ``PNG (image) encoded as base64``."""
        if self.kind is FileKind.BINARY:
            description = "binary data of no allowed format"
        else:
            description = f"{self.format} ({self.kind.value})"
        if self.encoding:
            return f"{description} {self.encoding}"
        return description


def flatten_json(value: Any) -> Iterator[str]:
    """Yield every string, key and number in a decoded JSON value, depth first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                stack.append(child)
                stack.append(str(key))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        elif isinstance(item, (bytes, bytearray, memoryview)):
            yield bytes(item).decode("latin-1")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, (int, float)):
            yield str(item)


def _bytes_of_text(text: str) -> bytes:
    """Return the bytes that ``text`` represents if each character is one byte."""
    if text.isascii():
        return text.encode("ascii")
    return text.translate(_SURROGATE_TO_BYTE).encode("latin-1", errors="ignore")


def decode_text(data: bytes) -> str | None:
    """Return ``data`` as text (UTF-8 or GB18030) if it is text, else None."""
    for encoding in ("utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if not _text_is_binary(text):
            return text
    return None


def _text_is_binary(text: str) -> bool:
    """Return True if ``text`` contains characters that only bytes produce."""
    if not text:
        return False
    controls = len(_CONTROL_CHARS.findall(text))
    if controls >= 4 and controls > 0.01 * len(text):
        return True
    if len(_ESCAPED_BYTES.findall(text)) >= 4:
        return True
    high = len(_LATIN1_HIGH.findall(text))
    return high >= 64 and high > 0.3 * len(text)


class PayloadScanner:
    """Find the formats of ``blocked_kinds`` in bytes, text and JSON values."""

    def __init__(self, blocked_kinds: Iterable[FileKind]) -> None:
        self.blocked = frozenset(blocked_kinds)
        self._patterns = tuple(
            signature
            for signature in EMBEDDED_SIGNATURES
            if signature.kind in self.blocked
        )
        # One alternation is faster on the many short decoded runs. Separate
        # searches are faster on large data, because each starts with a
        # literal prefix that the regex engine looks for directly.
        self._combined = re.compile(
            b"|".join(
                b"(?P<s%d>%s)" % (index, signature.pattern.pattern)
                for index, signature in enumerate(self._patterns)
            )
            or b"(?!)",
            re.DOTALL,
        )

    def scan_bytes(self, data: bytes) -> Finding | None:
        """Return the first blocked format in the raw bytes of a file, or None."""
        leading = sniff_format(data[:SNIFF_BYTES])
        if leading is not None and leading.kind in self.blocked:
            return Finding(leading.format, leading.kind)
        found = self._find_embedded(data, "at byte {offset}")
        if found is not None or leading is not None:
            # A recognised format that is allowed, such as an image where
            # images are not blocked, is not text and not unknown binary.
            return found

        text = decode_text(data)
        if text is None:
            if FileKind.VIDEO in self.blocked and sniff_transport_stream(
                data[:SNIFF_BYTES]
            ):
                return Finding("MPEG transport stream", FileKind.VIDEO)
            if FileKind.BINARY in self.blocked:
                return Finding("binary", FileKind.BINARY)
            return None
        return self._scan_decoded_text(text, 0)

    def scan_text(self, text: str, depth: int = 0) -> Finding | None:
        """Return the first blocked format in ``text`` or in the runs it encodes."""
        as_bytes = _bytes_of_text(text)
        found = self._find_embedded(
            as_bytes, "in characters that represent bytes, at character {offset}"
        )
        if found is not None:
            return found
        if FileKind.BINARY in self.blocked and _text_is_binary(text):
            where = "in characters that represent bytes"
            return Finding("binary", FileKind.BINARY, where)
        return self._scan_encoded_runs(text, depth)

    def _scan_decoded_text(self, text: str, depth: int) -> Finding | None:
        """Scan ``text`` that :func:`decode_text` returned for bytes already searched.

        Skip the checks of :meth:`scan_text` whose result is known: the
        signature search repeats the one on the bytes if ``text`` is ASCII,
        and :func:`decode_text` has ruled out binary characters.
        """
        if not text.isascii():
            found = self._find_embedded(
                _bytes_of_text(text),
                "in characters that represent bytes, at character {offset}",
            )
            if found is not None:
                return found
        return self._scan_encoded_runs(text, depth)

    def scan_json(self, value: Any) -> Finding | None:
        """Return the first blocked format in the strings and numbers of ``value``."""
        return self.scan_text("\n".join(flatten_json(value)))

    def _find_embedded(self, data: bytes, where: str) -> Finding | None:
        """Return the first embedded signature in ``data``.

        ``where`` may contain ``{offset}``, the position of the match.
        """
        if len(data) < _COMBINED_SEARCH_BYTES:
            match = self._combined.search(data)
            if match is None or match.lastgroup is None:
                return None
            signature = self._patterns[int(match.lastgroup[1:])]
            location = where.format(offset=match.start())
            return Finding(signature.format, signature.kind, location)
        for signature in self._patterns:
            match = signature.pattern.search(data)
            if match is not None:
                location = where.format(offset=match.start())
                return Finding(signature.format, signature.kind, location)
        return None

    def _scan_decoded(
        self, candidates: list[bytes], encoding: str, depth: int, *, binary_ok: bool
    ) -> Finding | None:
        """Scan the decodings of one run, one for each way of aligning it.

        ``binary_ok`` is False for runs that look like numbers, not data.
        """
        where = f"encoded as {encoding}"
        for data in candidates:
            found = self._find_embedded(data, where)
            if found is not None:
                return found
            if len(data) >= MIN_BINARY_BYTES:
                leading = sniff_format(data[:SNIFF_BYTES])
                if leading is not None and leading.kind in self.blocked:
                    return Finding(leading.format, leading.kind, where)

        # Few distinct byte values, such as a repeated id, are not data.
        longest = max(
            (len(data) for data in candidates if len(set(data)) >= 64), default=0
        )
        for data in candidates:
            text = decode_text(data)
            if text is not None and len(text) >= MIN_RUN_CHARS:
                # The run encodes text, which may encode a file again.
                if depth + 1 < MAX_NESTING:
                    return self._scan_decoded_text(text, depth + 1)
                return None
        if (
            binary_ok
            and FileKind.BINARY in self.blocked
            and longest >= MIN_BINARY_BYTES
        ):
            return Finding("binary", FileKind.BINARY, where)
        return None

    def _scan_encoded_runs(self, text: str, depth: int) -> Finding | None:
        for match in _B64_RUN.finditer(text):
            found = self._scan_base64(match.group(), depth)
            if found is not None:
                return found
        for match in _HEX_RUN.finditer(text):
            found = self._scan_hex(match.group(), depth)
            if found is not None:
                return found
        if "\\x" in text:
            for match in _ESCAPED_RUN.finditer(text):
                found = self._scan_escaped(match.group(), depth)
                if found is not None:
                    return found
        for match in _DECIMAL_RUN.finditer(text):
            values = [int(number) for number in re.findall(r"\d+", match.group())]
            if max(values) <= 255:
                found = self._find_embedded(bytes(values), "as decimal byte values")
                if found is not None:
                    return found
        return None

    def _scan_base64(self, run: str, depth: int) -> Finding | None:
        compact = _WHITESPACE.sub("", run).replace("=", "")
        characters = set(compact)
        if characters <= _HEX_DIGITS:
            return None  # scanned as hex
        mixed = (
            characters & _UPPER
            and characters & _LOWER
            and characters & _DIGITS_OR_SIGNS
        )
        if not mixed:
            # Base64 of binary data mixes all three; names and words do not.
            return None
        compact = compact.replace("-", "+").replace("_", "/")
        candidates = []
        for shift in range(4):
            part = compact[shift:]
            part = part[: len(part) // 4 * 4]
            if len(part) < MIN_RUN_CHARS:
                continue
            try:
                candidates.append(base64.b64decode(part))
            except binascii.Error:
                continue
        # Repeated characters, such as a line of dashes, are not data.
        varied = len(set(compact)) >= 16
        return self._scan_decoded(candidates, "base64", depth, binary_ok=varied)

    def _scan_hex(self, run: str, depth: int) -> Finding | None:
        digits = _HEX_NOISE.sub("", run)
        if not _HEX_LETTERS & set(digits):
            return None  # a number, such as an id or a timestamp
        candidates = []
        for shift in (0, 1):
            part = digits[shift:]
            part = part[: len(part) // 2 * 2]
            if len(part) >= MIN_RUN_CHARS:
                candidates.append(bytes.fromhex(part))
        # Digits alone are more likely numbers than hex of data, and groups
        # of one digest length are printed digests.
        letters = sum(1 for char in digits if char.isalpha())
        lengths = {len(group) for group in _HEX_SEPARATORS.split(run) if group}
        digests = len(lengths) == 1 and lengths <= _DIGEST_HEX_CHARS
        binary_ok = letters >= 0.1 * len(digits) and not digests
        return self._scan_decoded(candidates, "hex", depth, binary_ok=binary_ok)

    def _scan_escaped(self, run: str, depth: int) -> Finding | None:
        if run.count("\\x") < 4:
            return None
        try:
            data = codecs.escape_decode(run.encode("ascii"))[0]
        except (ValueError, UnicodeEncodeError):
            return None
        return self._scan_decoded([data], "Python bytes escapes", depth, binary_ok=True)
