"""The run's engine-side clean-up: last registered, first run; a step the engine interrupted runs again."""

import functools
from typing import ClassVar

import pytest

from qsandbox.launcher.run.run import Cleanup


class EngineGone(Exception):
    pass


def test_steps_run_in_reverse_order_of_registration_once_each():
    ran: list[str] = []
    c = Cleanup()
    for name in ("network", "emulator", "revoke", "sandbox"):
        c.push(name, functools.partial(ran.append, name))
    assert c.pending == ["sandbox", "revoke", "emulator", "network"]
    c.unwind()
    assert ran == ["sandbox", "revoke", "emulator", "network"]
    assert c.pending == []
    c.unwind()  # a second unwind does nothing
    assert ran == ["sandbox", "revoke", "emulator", "network"]


def test_a_step_interrupted_by_the_engine_stays_and_the_ones_done_do_not_repeat():
    ran: list[str] = []
    engine_up = False

    def emulator() -> None:
        if not engine_up:
            raise EngineGone
        ran.append("emulator")

    c = Cleanup()
    c.push("network", lambda: ran.append("network"))
    c.push("emulator", emulator)
    c.push("sandbox", lambda: ran.append("sandbox"))
    with pytest.raises(EngineGone):
        c.unwind()
    assert ran == ["sandbox"]
    assert c.pending == ["emulator", "network"]
    engine_up = True
    c.unwind()
    assert ran == ["sandbox", "emulator", "network"]


def test_the_token_refresher_says_when_minting_fails_and_again_before_the_token_expires():
    """A script whose token cannot be renewed gets 401s: the launcher says so, never silently."""
    import threading
    import time

    from qsandbox.common.errors import SandboxError
    from qsandbox.common.handoff import AccessToken
    from qsandbox.launcher.run import keepalive

    class FailingBroker:
        def __init__(self) -> None:
            self.calls = 0

        def mint(self) -> AccessToken:
            self.calls += 1
            if self.calls >= 4:
                return AccessToken("eyJ.renewed.token", int(time.time()) + 3600)
            raise SandboxError("IAM answered 503: busy")

    class Attachment:
        sent: ClassVar[list[bytes]] = []

        def send(self, data: bytes) -> None:
            self.sent.append(data)

    said: list[str] = []
    refresher = keepalive.Refresher(FailingBroker(), Attachment().send, int(time.time()) + 1, said.append)  # type: ignore[arg-type]
    refresher.MIN_WAIT, refresher.WARN_BEFORE = 0.05, 3600.0  # every try "just before" expiry
    refresher.start()
    deadline = time.monotonic() + 10
    while len(said) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    refresher.stop.set()
    refresher.join(5)
    assert said[0].startswith("could not renew the IAM access token (IAM answered 503: busy); retrying")
    assert "could not be renewed: the script's calls to IBM will be refused (401)" in said[1]
    assert said[2] == "the IAM access token was renewed" and len(Attachment.sent) == 1
    assert not isinstance(threading.current_thread(), keepalive.Refresher)
