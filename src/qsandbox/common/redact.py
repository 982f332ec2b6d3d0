"""Streaming redaction of the sandbox's stdout and stderr.

Masks the key in its literal, URL-encoded and base64 forms (at each of base64's three alignments),
and anything shaped like a JWT (IAM access tokens obtained during the run), across chunk boundaries
and when a script writes one character at a time. Output stays live: bytes are held back only
while they could still be the start of a secret.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from typing import cast

MASK = b"***"
# An IAM access token is a JWT: three base64url parts, the first two JSON objects ("eyJ").
_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
_TOKEN_CHARS = re.compile(rb"[A-Za-z0-9_.-]*\Z")
_HOLD_LIMIT = 16 * 1024  # a JWT-looking run longer than this is flushed (masked if complete)


def forms(secret: str) -> list[bytes]:
    """The byte strings that reveal `secret`: literal, URL-encoded, base64 at three alignments."""
    raw = secret.encode()
    found = {raw, urllib.parse.quote(secret, safe="").encode()}
    for shift in range(3):
        b64 = base64.b64encode(b"\0" * shift + raw)
        inner = b64[4:-4]  # the part that does not depend on neighbouring bytes
        if len(inner) >= 8:
            found.add(inner)
            found.add(inner.replace(b"+", b"-").replace(b"/", b"_"))  # base64url
    return sorted(found, key=len, reverse=True)


class Redactor:
    """Feed chunks in, get redacted chunks out; `flush()` at the end of the stream."""

    def __init__(self, secrets: list[str]) -> None:
        self._needles: list[bytes] = []
        self._pattern = _JWT
        self._held = b""
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Mask `secret` too, from the next chunk on (a token the script's client just obtained)."""
        new = set(forms(secret)) - set(self._needles) if secret else set()
        if not new:
            return
        self._needles = sorted({*self._needles, *new}, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(n) for n in self._needles) + b"|" + _JWT.pattern)

    def feed(self, chunk: bytes) -> bytes:
        data = self._pattern.sub(MASK, self._held + chunk)
        keep = self._holdback(data)
        self._held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep]

    def flush(self) -> bytes:
        data, self._held = self._pattern.sub(MASK, self._held), b""
        return data

    def _holdback(self, data: bytes) -> int:
        """How many trailing bytes could still become a secret once more bytes arrive."""
        keep = 0
        for needle in self._needles:
            for n in range(min(len(needle) - 1, len(data)), keep, -1):
                if data.endswith(needle[:n]):
                    keep = n
                    break
        # A run of token characters that may be a JWT still being written.
        tail = data[cast(re.Match[bytes], _TOKEN_CHARS.search(data)).start() :]  # \Z: always matches
        start = tail.find(b"eyJ")
        if start != -1:
            if len(tail) - start <= _HOLD_LIMIT:
                keep = max(keep, len(tail) - start)
        elif tail.endswith(b"ey"):
            keep = max(keep, 2)
        elif tail.endswith(b"e"):
            keep = max(keep, 1)
        return keep
