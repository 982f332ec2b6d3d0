"""Streaming redaction of the sandbox's stdout and stderr.

Masks the key in its literal, URL-encoded, hex and base64 forms (at each of base64's three alignments;
the whole run of base64 characters that holds the key, so no characters of its neighbours' encoding
are left around the mask), and anything shaped like a JWT (IAM access tokens obtained during the
run), across chunk boundaries and when a script writes one character at a time. Output stays
live: bytes are held back only while they could still be (the start of) a secret, and a trailing
run of base64 characters until it ends.
"""

from __future__ import annotations

import base64
import re
import urllib.parse

MASK = b"***"
# An IAM access token is a JWT: three base64url parts, the first two JSON objects ("eyJ").
_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
_TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-"
_HOLD_LIMIT = 16 * 1024  # a JWT-looking run longer than this is flushed (masked if complete)


def forms(secret: str) -> list[bytes]:
    """The byte strings that reveal `secret`: literal, URL-encoded, hex (either case; a name a script
    makes up can carry it, and the closing line lists refused hosts), base64 at three alignments."""
    raw = secret.encode()
    found = {raw, urllib.parse.quote(secret, safe="").encode(), raw.hex().encode(), raw.hex().upper().encode()}
    found |= _base64_forms(secret)
    return sorted(found, key=len, reverse=True)


def _base64_forms(secret: str) -> set[bytes]:
    found = set()
    for shift in range(3):
        b64 = base64.b64encode(b"\0" * shift + secret.encode())
        inner = b64[4:-4]  # the part that does not depend on neighbouring bytes
        if len(inner) >= 8:
            found.add(inner)
            found.add(inner.replace(b"+", b"-").replace(b"/", b"_"))  # base64url
    return found


class Redactor:
    """Feed chunks in, get redacted chunks out; `flush()` at the end of the stream."""

    def __init__(self, secrets: list[str]) -> None:
        self._needles: list[bytes] = []
        self._b64: set[bytes] = set()
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
        self._b64 |= _base64_forms(secret) & new
        self._pattern = re.compile(b"|".join(re.escape(n) for n in self._needles) + b"|" + _JWT.pattern)

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk
        # A run of base64 characters at the end is not masked or passed on until it ends: it may
        # hold the key's base64, whose whole run is masked, and its start would be out already.
        run = len(data) - len(data.rstrip(_B64_CHARS + b"=")) if self._b64 else 0
        run = run if run <= _HOLD_LIMIT else 0
        data, tail = self._sub(data[: len(data) - run]), data[len(data) - run :]
        keep = self._holdback(data)
        self._held = (data[len(data) - keep :] if keep else b"") + tail
        return data[: len(data) - keep]

    def mask(self, text: str) -> str:
        """One whole text at once (a closing line), masked like the stream."""
        return self._sub(text.encode(errors="surrogatepass")).decode(errors="surrogatepass")

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where `mask(text)` puts its masks: each masked run's (start, end), in characters, in
        order (a notebook masks a text a viewer joins from pieces, piece by piece)."""
        data = text.encode(errors="surrogatepass")
        found, done, chars = [], 0, 0
        for start, end in self._spans(data):
            chars += len(data[done:start].decode(errors="surrogatepass"))
            length = len(data[start:end].decode(errors="surrogatepass"))
            found.append((chars, chars + length))
            chars, done = chars + length, end
        return found

    def _sub(self, data: bytes) -> bytes:
        out, pos = [], 0
        for start, end in self._spans(data):
            out += [data[pos:start], MASK]
            pos = end
        out.append(data[pos:])
        return b"".join(out)

    def _spans(self, data: bytes) -> list[tuple[int, int]]:
        """Every match; a base64 form takes the whole run of base64 characters around it
        (padding included), so none of its neighbours' encoding is left beside the mask."""
        found: list[tuple[int, int]] = []
        pos = 0
        for m in self._pattern.finditer(data):
            start, end = m.span()
            if start < pos:
                continue  # inside a run already masked
            if m.group() in self._b64:
                start = len(data[pos:start].rstrip(_B64_CHARS)) + pos
                end += len(data[end:]) - len(data[end:].lstrip(_B64_CHARS))
                end += len(data[end:]) - len(data[end:].lstrip(b"="))
            found.append((start, end))
            pos = end
        return found

    def flush(self) -> bytes:
        data, self._held = self._sub(self._held), b""
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
        tail = data[len(data.rstrip(_TOKEN_CHARS)) :]
        start = tail.find(b"eyJ")
        if start != -1:
            if len(tail) - start <= _HOLD_LIMIT:
                keep = max(keep, len(tail) - start)
        elif tail.endswith(b"ey"):
            keep = max(keep, 2)
        elif tail.endswith(b"e"):
            keep = max(keep, 1)
        return keep
