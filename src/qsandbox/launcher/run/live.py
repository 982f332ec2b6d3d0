"""The script's live output on the launcher's side: its stdout and stderr copied to ours as they come,
the key masked, and on a terminal nothing but text (terminal.py); the stream's other channels go to
the relay, and /output to the receiver (launcher/run/stream.py dispatches the frames)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import BinaryIO

from ...common.redact import Redactor
from ..engine import sandbox
from . import stream, transfer
from .relay import Relay
from .terminal import ControlFilter, end_line


def isatty(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class LiveOutput:
    """Copies the script's output to ours, live, until the stream ends: the key masked, and on a
    terminal (unless --raw-output) nothing but text, newlines, tabs and colours."""

    def __init__(
        self,
        out: BinaryIO,
        err: BinaryIO,
        secrets: list[str] | None,
        receiver: transfer.OutputReceiver | None,
        *,
        raw: bool,
        done: threading.Event,
    ) -> None:
        self.targets = {1: out, 2: err}
        self.redactors = {n: Redactor(secrets) for n in self.targets} if secrets is not None else {}
        # Two filters per terminal: the first before masking (a control character between two halves
        # of the key hides nothing), the second last, so that a colour sequence the redactor holds
        # back in part never reaches the terminal half-made, to be finished by the other stream.
        self.filters = {n: (ControlFilter(), ControlFilter()) for n, t in self.targets.items() if not raw and isatty(t)}
        self.receiver = receiver
        self.last = "\n"  # the last character of the script's that reached a terminal of ours
        self.dirty = False  # the script's output reached our stderr's terminal since our last line
        self.done = done  # set when the stream has ended and everything is written

    def _write(self, stream: int, data: bytes) -> None:
        if stream in self.filters:
            data = self.filters[stream][0].feed(data)
        if stream in self.redactors:
            data = self.redactors[stream].feed(data)
        if stream in self.filters:
            data = self.filters[stream][1].feed(data)
            self.last = self.filters[stream][1].last
        self._emit(stream, data)

    def _emit(self, stream: int, data: bytes) -> None:
        if not data:
            return
        self.dirty = True
        try:
            self.targets[stream].write(data)
            self.targets[stream].flush()
        except (OSError, ValueError):  # our terminal is gone (SIGHUP): keep draining
            pass

    def start(self, attachment: sandbox.Attachment, relay: Relay, say: Callable[[str], None]) -> None:
        """Pump in a thread of its own until the stream ends."""
        threading.Thread(target=self.run, args=(attachment, relay, say), daemon=True).start()

    def run(self, attachment: sandbox.Attachment, relay: Relay, say: Callable[[str], None]) -> None:
        try:
            stream.pump(attachment, output=self._write, relay=relay, receiver=self.receiver, say=say)
        finally:
            if self.receiver:
                self.receiver.flush()
            for n in self.targets:
                tail = self.filters[n][0].flush() if n in self.filters else b""
                if n in self.redactors:
                    tail = self.redactors[n].feed(tail) + self.redactors[n].flush()
                if n in self.filters:
                    tail = self.filters[n][1].feed(tail) + self.filters[n][1].flush()
                    self.last = self.filters[n][1].last
                self._emit(n, tail)
            self.done.set()

    def fresh_line(self) -> None:
        """Before qsandbox's own lines after the script's: colours reset, and a line of its own."""
        if self.dirty and isatty(self.targets[2]):
            self._emit(2, end_line(self.last))
            self.last, self.dirty = "\n", False
