"""`Batch` against the fake engine (tests/fake_engine.py): scripts take their slots in the order
given, --jobs and --ahead bound what runs and what waits ready, --fail-fast stops the batch with no
key sent into the sandboxes made ready ahead, a signal aborts every live run, and --revoke-after
asks the key broker once before the first script and once after the last."""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_engine import Behaviour, FakeContainer, FakeEngine
from helpers import new_canary

from qsandbox.launcher.core.credentials import KeySource
from qsandbox.launcher.core.settings import RunSettings
from qsandbox.launcher.run.batch import Batch, BatchResult

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(autouse=True)
def stray_signals() -> Iterator[list[int]]:
    """A signal that arrives while no batch owns the signals fails the test instead of ending pytest."""
    caught: list[int] = []
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, lambda n, _frame: caught.append(n))
    yield caught
    for s, handler in old.items():
        signal.signal(s, handler)
    assert not caught, f"signals arrived outside the batch: {caught}"


@pytest.fixture
def key() -> str:
    return new_canary()


@pytest.fixture
def source(tmp_path: Path, key: str) -> KeySource:
    path = tmp_path / "key"
    path.write_text(key + "\n")
    return KeySource(file=str(path))


@dataclass
class Done:
    result: BatchResult
    out: str
    err: str


def batch(tmp_path: Path, source: KeySource, names: str, **options: object) -> Done:
    """`qsandbox batch` of the scripts a.py, b.py, ... named by the letters of `names`."""
    scripts = []
    for letter in names:
        path = tmp_path / f"{letter}.py"
        path.write_text(f"print('{letter}')\n")
        scripts.append((f"{letter}.py", RunSettings(script=path)))
    out, err = io.BytesIO(), io.BytesIO()
    result = Batch(scripts, source, out=out, err=err, **options).execute()  # type: ignore[arg-type]
    return Done(result, out.getvalue().decode(), err.getvalue().decode())


def keyed(fake: FakeEngine) -> list[str]:
    """The scripts whose sandbox received the key, in the order they received it."""
    names = {c.name: fake._script(c) for c in fake.sandboxes()}
    return [names[e.split()[1]] for e in fake.events if e.startswith("key qsandbox-")]


def slow_to_make(fake: FakeEngine, script: str, seconds: float) -> None:
    def hook(c: FakeContainer) -> None:
        if fake._script(c) == script:
            time.sleep(seconds)

    fake.hooks["inspect"] = hook


def test_scripts_take_their_slots_in_the_order_given(fake, tmp_path, source, key):
    """a.py's sandbox is the slowest to make: b.py and c.py are ready first, and wait their turn."""
    slow_to_make(fake, "a.py", 0.5)
    done = batch(tmp_path, source, "abc", jobs=1, ahead=2)
    assert keyed(fake) == ["a.py", "b.py", "c.py"]
    a, b = fake.sandbox("a.py").name, fake.sandbox("b.py").name
    assert fake.events.index(f"create {b}") < fake.events.index(f"key {a}")  # made ahead, while a waited
    assert fake.events.index(f"removed {a}") < fake.events.index(f"key {b}")  # one slot: a is over first
    assert done.result.exit_code == 0 and [s.passed for s in done.result.scripts] == [True, True, True]
    assert all(c.seen.start is not None and c.seen.start.token == key for c in fake.sandboxes())


def test_jobs_bound_the_sandboxes_holding_the_key_and_ahead_those_waiting_ready(fake, tmp_path, source):
    # Each script runs 0.3 s, and on until the engine has held 3 sandboxes and 2 keys at once (at
    # most 2 s): on a loaded machine too, the bounds are reached if the batch allows them, and
    # there is time to pass them if it allowed more.
    fake.default = Behaviour(seconds=2.0, at_least=0.3, until=lambda: fake.most_alive >= 3 and fake.most_keyed >= 2)
    done = batch(tmp_path, source, "abcde", jobs=2, ahead=1)
    assert done.result.exit_code == 0 and sorted(keyed(fake)) == ["a.py", "b.py", "c.py", "d.py", "e.py"]
    assert fake.most_keyed == 2  # --jobs 2: never more, and reached
    assert fake.most_alive == 3  # --jobs 2 --ahead 1: never more sandboxes at once, and reached


def test_ahead_zero_makes_no_sandbox_before_its_turn(fake, tmp_path, source):
    fake.default = Behaviour(seconds=0.2)
    batch(tmp_path, source, "abc", jobs=1, ahead=0)
    assert fake.most_alive == 1 and fake.most_keyed == 1


@pytest.mark.parametrize("fail_fast", [True, False])
def test_fail_fast_sends_no_key_into_the_sandboxes_made_ahead(fake, tmp_path, source, fail_fast):
    """a.py fails; with --fail-fast b.py (made ready ahead) is removed without its key and c.py is
    never made; without it (the control) both run."""
    fake.behaviours["a.py"] = Behaviour(exit_code=1, seconds=0.2)
    done = batch(tmp_path, source, "abc", jobs=1, ahead=1, fail_fast=fail_fast)
    assert done.result.exit_code == 1
    if not fail_fast:
        assert keyed(fake) == ["a.py", "b.py", "c.py"]
        return
    assert keyed(fake) == ["a.py"]
    b = fake.sandbox("b.py")
    assert b.seen.start is None and b.seen.controls == []  # no key, and no abort frame: EOF ends it
    assert f"removed {b.name}" in fake.events
    assert {c.name for c in fake.sandboxes()} == {fake.sandbox("a.py").name, b.name}  # c.py: never made
    assert [s.ran for s in done.result.scripts] == [True, False, False]
    assert fake.containers == {}


@pytest.mark.parametrize(
    ("signum", "reason", "code"), [(signal.SIGTERM, "terminate", 143), (signal.SIGINT, "interrupt", 130)]
)
def test_a_signal_aborts_every_live_run_and_starts_no_other(fake, tmp_path, source, signum, reason, code):
    fake.default = Behaviour(hang=True)

    once = threading.Lock()

    def second_key(c: FakeContainer) -> None:
        if fake.most_keyed == 2 and once.acquire(blocking=False):  # both slots hold the key: interrupted
            threading.Timer(0.2, lambda: signal.raise_signal(signum)).start()

    fake.hooks["key"] = second_key
    done = batch(tmp_path, source, "abcd", jobs=2, ahead=1)
    a, b, c = (fake.sandbox(s) for s in ("a.py", "b.py", "c.py"))
    assert a.seen.aborts == [reason] and b.seen.aborts == [reason]
    assert c.seen.start is None and c.seen.controls == []  # made ahead: no key, no abort frame
    assert {s.name for s in fake.sandboxes()} == {a.name, b.name, c.name}  # d.py: never made
    assert done.result.exit_code == code and done.result.aborted == reason
    assert [s.ran for s in done.result.scripts] == [True, True, False, False]
    assert f"qsandbox: batch {reason}: ending every live sandbox" in done.err
    assert fake.containers == {}


def test_revoke_after_asks_the_broker_once_before_the_first_script_and_once_after_the_last(fake, tmp_path, source, key):
    done = batch(tmp_path, source, "ab", jobs=2, revoke_after=True)
    assert fake.broker_calls == [("keys", [], key), ("revoke", ["ApiKey-before-1", "ApiKey-before-2"], key)]
    first_key = next(e for e in fake.events if e.startswith("key qsandbox-"))
    last_removed = [e for e in fake.events if e.startswith("removed qsandbox-")][-1]
    assert fake.events.index("removed broker:keys") < fake.events.index(first_key)
    assert fake.events.index(last_removed) < fake.events.index("create broker:revoke")
    assert done.result.exit_code == 0 and "qsandbox: API key revoked" in done.err


def test_a_failed_revocation_fails_the_batch(fake, tmp_path, source):
    fake.broker["revoke"] = {"ok": False, "id": "ApiKey-the-key", "error": "IAM said no"}
    done = batch(tmp_path, source, "a", jobs=1, revoke_after=True)
    assert done.result.exit_code == 125 and "REVOKING THE API KEY FAILED: IAM said no" in done.err
