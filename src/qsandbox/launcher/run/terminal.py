"""What the sandbox's output may do to the user's terminal: print text, and nothing else.

A script (or a package it imports) that writes escape sequences could move the cursor and rewrite
qsandbox's own lines (a forged "container and secret destroyed" closing line), hide text, set the
window title, or write the clipboard (OSC 52). When our stdout or stderr is a terminal, the
script's output goes through `ControlFilter`: newline, tab and colour (SGR `ESC [ ... m` with
only colour and weight parameters: no concealed or blinking text) pass; every other C0 control
(carriage return, backspace, bell, ...), DEL, every other escape sequence (CSI, OSC, DCS, APC, PM,
SOS and two-byte escapes, up to their terminator however far) and the C1 controls
(U+0080-U+009F) are dropped. It keeps no more than one escape sequence's
parameters in memory, so a sequence that never ends costs nothing. `--raw-output` turns it off.
`end_line()` is what qsandbox writes before its closing line: the colours reset and, if the
output did not end a line, a newline.
"""

from __future__ import annotations

import codecs
import re

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what needs a look: controls but tab and newline

_SGR_PARAMS = frozenset("0123456789;")  # no ':' sub-parameters: terminals group them differently
_MAX_PARAMS = 64  # longer SGR parameters are dropped whole


# SGR parameters that only colour or weight text: no conceal (8), no blink (5, 6).
_SGR_PLAIN = frozenset(
    {0, 1, 2, 3, 4, 7, 9, 21, 22, 23, 24, 27, 29, 39, 49, 59}
    | set(range(30, 38))
    | set(range(40, 48))
    | set(range(90, 98))
    | set(range(100, 108))
)
_SGR_EXTENDED = frozenset({38, 48, 58})  # 38;5;N or 38;2;R;G;B


def _colour_only(params: str) -> bool:
    if not set(params) <= _SGR_PARAMS:
        return False
    numbers = [int(p) if p else 0 for p in params.split(";")]
    i = 0
    while i < len(numbers):
        n = numbers[i]
        if n in _SGR_EXTENDED:
            mode = numbers[i + 1] if i + 1 < len(numbers) else None
            width = {5: 1, 2: 3}.get(mode) if mode is not None else None
            if width is None or any(v > 255 for v in numbers[i + 2 : i + 2 + width]):
                return False
            i += 2 + width
        elif n in _SGR_PLAIN:
            i += 1
        else:
            return False
    return True


class ControlFilter:
    """Feed bytes in, get the printable part out (see the module's docstring). The bytes are read
    as UTF-8 (what is not UTF-8 becomes U+FFFD), so a C1 control is seen whatever its encoding."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._state = "text"  # text | esc | csi | string | string-esc
        self._params: list[str] = []
        self.last = "\n"  # the last character passed on (a newline before any output)

    def feed(self, data: bytes, final: bool = False) -> bytes:  # noqa: C901 - one state machine over the escape grammar: a split risks the filter
        text = self._decoder.decode(data, final)
        if self._state == "text" and not _CONTROL.search(text):  # the common case: plain text
            if text:
                self.last = text[-1]
            return text.encode()
        out: list[str] = []
        for ch in text:
            state = self._state
            if state == "text":
                if ch == "\x1b":
                    self._state = "esc"
                elif ch in "\n\t" or not (ch < " " or "\x7f" <= ch <= "\x9f"):
                    out.append(ch)
            elif state == "esc":
                if ch == "[":
                    self._state, self._params = "csi", []
                elif ch in "]PX^_":  # OSC, DCS, SOS, PM, APC: a string until BEL or ESC \
                    self._state = "string"
                elif not " " <= ch <= "/":  # the escape's final byte: dropped with it
                    self._state = "text"
            elif state == "csi":
                if "@" <= ch <= "~":  # final byte
                    params = "".join(self._params)
                    if ch == "m" and len(params) <= _MAX_PARAMS and _colour_only(params):
                        out.append(f"\x1b[{params}m")
                    self._state = "text"
                elif len(self._params) <= _MAX_PARAMS:
                    self._params.append(ch)
            elif state == "string":
                if ch == "\x07":
                    self._state = "text"
                elif ch == "\x1b":
                    self._state = "string-esc"
            elif state == "string-esc":
                self._state = "text" if ch == "\\" else "string"
        if out:
            self.last = out[-1][-1]
        return "".join(out).encode()

    def flush(self) -> bytes:
        """At the end of the stream: an unfinished sequence is dropped."""
        tail = self.feed(b"", final=True)
        self._state = "text"
        return tail


def end_line(last: str) -> bytes:
    """Before qsandbox's closing line on a terminal: reset the colours; start a fresh line if needed."""
    return b"\x1b[0m" + (b"" if last == "\n" else b"\n")
