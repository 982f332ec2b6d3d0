"""The batch's slots and output buffers, without an engine."""

from __future__ import annotations

import threading
import time

from qsandbox.launcher.run.batch import _Lines, _Turns


def _take_all(turns: _Turns, numbers: list[int], hold: float) -> list[int]:
    """Each number in its own thread, started in reverse; returns the order the turns were taken."""
    order: list[int] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        ticket = turns.ticket(n)
        while not ticket.acquire(timeout=0.05):
            pass
        with lock:
            order.append(n)
        time.sleep(hold)
        ticket.release()

    threads = [threading.Thread(target=one, args=(n,)) for n in reversed(numbers)]
    for t in threads:
        t.start()
        time.sleep(0.01)  # the later numbers arrive first
    for t in threads:
        t.join(10)
    return order


def test_turns_are_taken_in_the_scripts_order_however_the_sandboxes_arrive():
    assert _take_all(_Turns(2, deferred=False), [0, 1, 2, 3, 4], hold=0.02) == [0, 1, 2, 3, 4]


def test_no_more_than_the_slots_at_once():
    turns = _Turns(2, deferred=False)
    a, b, c = turns.ticket(0), turns.ticket(1), turns.ticket(2)
    assert a.acquire(timeout=0.1) and b.acquire(timeout=0.1)
    assert not c.acquire(timeout=0.1)  # both slots taken
    a.release()
    assert c.acquire(timeout=0.1)


def test_a_skipped_turn_lets_the_next_go():
    turns = _Turns(1, deferred=False)
    later = turns.ticket(1)
    assert not later.acquire(timeout=0.1)  # number 0 has not had its turn
    turns.skip(0)  # it ended without taking it (an error, or ended while waiting)
    assert later.acquire(timeout=0.1)


def test_deferred_slots_free_only_when_the_batch_says_so():
    turns = _Turns(1, deferred=True)
    first, second = turns.ticket(0), turns.ticket(1)
    assert first.acquire(timeout=0.1)
    first.release()  # the run ended; --fail-fast: the batch has not looked yet
    assert not second.acquire(timeout=0.1)
    turns.free()
    assert second.acquire(timeout=0.1)


def test_lines_of_two_streams_are_never_glued():
    lines = _Lines()
    lines.out.write(b"hello from 3")  # no newline yet: a redactor holds a tail back
    lines.err.write(b"err line\n")
    lines.out.write(b"\n")
    lines.err.write(b"unfinished")
    assert lines.getvalue().splitlines() == [b"err line", b"hello from 3", b"unfinished"]
