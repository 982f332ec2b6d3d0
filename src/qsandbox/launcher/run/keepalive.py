"""What keeps a handed-off run going from the launcher's side: the heartbeat (the dead-man switch's
other half) and, for short-lived tokens, the token refresher."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from ...common import handoff
from ...common.errors import QsandboxError
from ..engine import sandbox
from . import stream
from .revoke import Broker


class Refresher(threading.Thread):
    """Short-lived mode: mint a fresh access token before the current one expires, and send it in.

    A failure is retried; the first one is said on stderr, and again once the token is about to
    expire (the script's calls fail with 401 after that), never silently."""

    WARN_BEFORE = 60.0  # seconds before expiry: say it again if minting still fails
    MIN_WAIT = 5.0  # seconds between tries, at least

    def __init__(
        self, broker: Broker, send: Callable[[bytes], None], expiration: int, say: Callable[[str], None]
    ) -> None:
        super().__init__(daemon=True)
        self.broker, self.send, self.expiration, self.say = broker, send, expiration, say
        self.stop = threading.Event()

    def run(self) -> None:
        failing, warned = False, False
        while not self.stop.wait(max(self.MIN_WAIT, (self.expiration - time.time()) * (0.2 if failing else 0.8))):
            try:
                token = self.broker.mint()
                self.send(stream.control(handoff.encode_access_token(token)))
            except (QsandboxError, OSError) as e:
                left = self.expiration - time.time()
                if not failing:
                    self.say(f"could not renew the IAM access token ({e}); retrying, this one lasts {left:.0f} s")
                elif left < self.WARN_BEFORE and not warned:
                    self.say(
                        f"the IAM access token expires in {max(0.0, left):.0f} s and could not be renewed: the "
                        "script's calls to IBM will be refused (401) after that"
                    )
                    warned = True
                failing = True
                continue
            if failing:
                self.say("the IAM access token was renewed")
            self.expiration, failing, warned = token.expiration, False, False


class Heartbeat(threading.Thread):
    """Tell the entry point every few seconds that the launcher, and the engine between us, live.

    EOF ends the sandbox when the launcher dies; silence ends it when the engine dies (no EOF then).
    """

    def __init__(self, attachment: sandbox.Attachment, err: BinaryIO, *, suspend_note: bool = True) -> None:
        super().__init__(daemon=True)
        self.attachment, self.err = attachment, err
        self.stop = threading.Event()
        # Called in the main thread: Ctrl-Z stops the heartbeat too, so say what that means. A run
        # driven by a batch is not in the main thread (signal.signal would raise): no note then.
        self._suspend_note = suspend_note
        if suspend_note:
            self._old_tstp = signal.signal(signal.SIGTSTP, self._on_suspend)

    def _on_suspend(self, *_: object) -> None:
        self.err.write(
            f"qsandbox: suspended; the sandbox stops the script if the launcher stays stopped for "
            f"{handoff.HEARTBEAT_TIMEOUT:.0f} s: `fg` before that to go on\n".encode()
        )
        self.err.flush()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stops here until SIGCONT
        signal.signal(signal.SIGTSTP, self._on_suspend)

    def end(self) -> None:
        """Stop beating and give Ctrl-Z back its old meaning (main thread)."""
        self.stop.set()
        if self._suspend_note:
            signal.signal(signal.SIGTSTP, self._old_tstp)

    def run(self) -> None:
        while not self.stop.wait(handoff.HEARTBEAT_INTERVAL):
            try:
                self.attachment.send(stream.ALIVE)
            except OSError:
                return
