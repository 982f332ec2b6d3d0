"""The run's engine-side clean-up: last registered, first run; a step the engine interrupted runs again."""

import functools

import pytest

from qsandbox.launcher.run import Cleanup


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
