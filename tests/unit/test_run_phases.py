"""`Run` phase by phase against the fake engine (tests/fake_engine.py): what is created, read back,
attached and started, what goes into the sandbox and when, how each abort ends a run, an engine lost
mid-run, --revoke-after's calls, a hardening mismatch refused, and the closing line. Each test takes
a second or so; the real-engine tests (tests/docker) prove the same properties once for real."""

from __future__ import annotations

import io
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from fake_engine import Behaviour, FakeContainer
from helpers import new_canary

from qsandbox.common import mux
from qsandbox.common.errors import HardeningMismatch, UsageError
from qsandbox.launcher.core.credentials import KeySource, Secret
from qsandbox.launcher.core.settings import LABEL, RunSettings
from qsandbox.launcher.run import run as run_mod

SIGNALS = [(signal.SIGINT, "interrupt", 130), (signal.SIGTERM, "terminate", 143), (signal.SIGHUP, "hangup", 129)]
# The sandbox's own events, from creation to the engine's confirmation that it is gone.
# Once the wait for its removal is answered, the engine is not asked again about this container:
# the list of what carries the run's label confirms it is gone.
CLEAN_RUN = ["create", "inspect", "wait", "attach", "start", "key", "inputs", "exit 0", "removed"]


@pytest.fixture(autouse=True)
def stray_signals() -> Iterator[list[int]]:
    """While a run lasts, it owns SIGINT, SIGTERM and SIGHUP; one that arrives outside it (a bug of
    the run or of the test) is caught here, and fails the test, instead of ending pytest."""
    caught: list[int] = []
    old = {s: signal.getsignal(s) for s, _, _ in SIGNALS}
    for s, _, _ in SIGNALS:
        signal.signal(s, lambda n, _frame: caught.append(n))
    yield caught
    for s, handler in old.items():
        signal.signal(s, handler)
    assert not caught, f"signals arrived outside the run: {caught}"


@pytest.fixture
def key() -> str:
    return new_canary()


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "a.py"
    path.write_text("print('the script is the fake entry point's')\n")
    return path


@pytest.fixture
def source(tmp_path: Path, key: str) -> KeySource:
    path = tmp_path / "key"
    path.write_text(key + "\n")
    return KeySource(file=str(path))


@dataclass
class Ran:
    result: run_mod.RunResult
    out: bytes
    err: str


def execute(settings: RunSettings, source: KeySource) -> Ran:
    out, err = io.BytesIO(), io.BytesIO()
    result = run_mod.run(settings, source, out=out, err=err)
    return Ran(result, out.getvalue(), err.getvalue().decode())


def after(delay: float, action: Callable[[], None]) -> Callable[[FakeContainer], None]:
    """A hook that does `action` `delay` seconds later, from another thread (the hook's own returns)."""

    def hook(_: FakeContainer) -> None:
        threading.Timer(delay, action).start()

    return hook


def in_order(events: list[str], *wanted: str) -> bool:
    """Whether `wanted` occur in `events` in this order (other events may come between)."""
    it = iter(events)
    return all(any(e == w for e in it) for w in wanted)


# -- the phases of a clean run ------------------------------------------------------------------


def test_a_run_reads_back_waits_and_attaches_before_it_starts_and_sends_the_key_after(fake, script, source, key):
    """The order that makes a run safe: the hardening is read back before anything is attached or
    started, the removal wait is registered before the start (no exit can be missed), the stream is
    attached before the start (no output lost), and the key goes in only after all of it; the
    engine is asked what is left of the run only once the sandbox is gone (a relayed run makes no
    network, so only its containers are listed)."""
    fake.default = Behaviour(prints=[(mux.STDOUT, f"key {key} said\n".encode()), (mux.STDERR, b"warned\n")])
    ran = execute(RunSettings(script=script), source)
    sandbox = fake.sandbox()
    assert fake.named("qsandbox-") == CLEAN_RUN
    assert in_order(fake.events, f"removed {sandbox.name}", "list containers")
    assert "list networks" not in fake.events
    assert ran.result.exit_code == 0 and ran.result.leftovers == []
    assert ran.out == b"key *** said\n" and "warned\n" in ran.err  # the key masked in the output


def test_what_goes_into_the_sandbox_is_the_start_message_then_the_inputs(fake, script, source, key, tmp_path):
    (tmp_path / "data.txt").write_text("input")
    settings = RunSettings(script=script, includes=(Path("data.txt"),), instance="crn:fake", output=tmp_path / "out")
    ran = execute(settings, source)
    seen = fake.sandbox().seen
    assert seen.start is not None
    assert (seen.start.token, seen.start.instance, seen.start.output) == (key, "crn:fake", True)
    assert seen.inputs_done and sorted(seen.input_names()) == ["a.py", "data.txt"]
    assert not seen.aborts and ran.result.exit_code == 0
    env = fake.sandbox().body["Env"]
    assert not any(key in e for e in env)  # never in the environment
    assert fake.sandbox().body["Cmd"] == ["run", "/work/a.py"]


def test_the_script_exit_code_and_its_output_come_back(fake, script, source, tmp_path):
    fake.default = Behaviour(exit_code=3, output={"result.txt": b"42"})
    ran = execute(replace(RunSettings(script=script), output=tmp_path / "out"), source)
    assert ran.result.exit_code == 3
    assert (tmp_path / "out" / "result.txt").read_bytes() == b"42"
    assert "qsandbox: /output: 1 entry delivered to" in ran.err


# -- aborts, at each phase ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _SignalWhileReading(KeySource):
    """A key source that is interrupted while it reads (the user presses Ctrl-C at the prompt)."""

    signum: int = signal.SIGINT

    def read(self, prompt: Callable[[], str] | None = None) -> Secret:
        signal.raise_signal(self.signum)
        return super().read(prompt)


@pytest.mark.parametrize(("signum", "reason", "code"), SIGNALS)
def test_a_signal_before_the_key_is_read_ends_the_run_with_nothing_created(fake, script, source, signum, reason, code):
    ran = execute(RunSettings(script=script), _SignalWhileReading(file=source.file, signum=signum))
    assert ran.result.exit_code == code
    assert fake.sandboxes() == [] and "create" not in " ".join(fake.events)
    assert ran.result.summary().endswith(f"exit {code} ({reason}) in {ran.result.duration:.2f}s; "
                                         "container and secret destroyed (engine confirms)")  # fmt: skip


@pytest.mark.parametrize("phase", ["inspect", "attach", "start"])
def test_a_signal_while_the_sandbox_is_made_removes_it_unstarted_and_sends_nothing(fake, script, source, phase):
    """SIGTERM while the sandbox is read back, attached or started: it is removed, never started,
    nothing reaches it (no key, no abort frame: closing the stream is enough before the hand-off)."""
    fake.hooks[phase] = lambda c: signal.raise_signal(signal.SIGTERM) if c.name.startswith("qsandbox-") else None
    ran = execute(RunSettings(script=script), source)
    sandbox = fake.sandbox()
    events = fake.named("qsandbox-")
    assert ran.result.exit_code == 143
    assert "start" not in events and "key" not in events, events
    assert events[-2:] == ["destroy", "removed"], events
    assert sandbox.seen.start is None and sandbox.seen.controls == []
    assert fake.containers == {} and ran.result.leftovers == []


@pytest.mark.parametrize(("signum", "reason", "code"), SIGNALS)
def test_a_signal_after_the_hand_off_sends_an_abort_frame_and_keeps_what_the_script_left(
    fake, script, source, tmp_path, signum, reason, code
):
    """After the key is in, the entry point must stop the script and cancel its jobs: an abort
    frame with the reason; the run's exit code is the signal's; /output written so far arrives."""
    fake.default = Behaviour(hang=True, output={"partial.txt": b"so far"})
    fake.hooks["inputs"] = after(0.2, lambda: signal.raise_signal(signum))
    ran = execute(replace(RunSettings(script=script), output=tmp_path / "out"), source)
    sandbox = fake.sandbox()
    assert sandbox.seen.aborts == [reason]
    assert in_order(fake.named("qsandbox-"), "inputs", f"abort {reason}", f"exit {code}", "removed")
    assert ran.result.exit_code == code
    assert f"exit {code} ({reason})" in ran.result.summary()
    assert (tmp_path / "out" / "partial.txt").read_bytes() == b"so far"


def test_timeout_aborts_with_124(fake, script, source):
    fake.default = Behaviour(hang=True)
    ran = execute(RunSettings(script=script, timeout=0.5), source)
    assert fake.sandbox().seen.aborts == ["timeout"]
    assert ran.result.exit_code == 124 and "exit 124 (timeout)" in ran.result.summary()


def test_the_script_closing_the_stream_ends_the_run_with_its_code(fake, script, source):
    fake.default = Behaviour(prints=[(mux.STDOUT, b"bye\n")], close_stream=True, exit_code=7)
    ran = execute(RunSettings(script=script), source)
    assert ran.result.exit_code == 7 and ran.out == b"bye\n"
    assert fake.sandbox().seen.aborts == []


# -- the engine lost mid-run --------------------------------------------------------------------


def test_an_engine_lost_mid_run_is_waited_for_then_the_clean_up_is_confirmed(fake, script, source):
    fake.default = Behaviour(hang=True)
    fake.hooks["inputs"] = after(0.2, fake.lose)
    fake.hooks["key"] = after(1.5, fake.come_back)
    ran = execute(RunSettings(script=script), source)
    name = fake.sandbox().name
    assert in_order(fake.events, "engine lost", "engine back", f"gone {name}", "list containers")
    assert ran.result.exit_code == 125 and ran.result.leftovers == []
    assert "(the engine went away mid-run)" in ran.result.summary()
    assert "qsandbox: lost the container engine mid-run; waiting up to" in ran.err
    assert "qsandbox: the engine is back and confirms the clean-up" in ran.err


def test_after_an_engine_loss_revoke_after_runs_once_the_engine_is_back(fake, script, source, key):
    fake.default = Behaviour(hang=True)
    fake.hooks["inputs"] = after(0.2, fake.lose)
    fake.hooks["key"] = lambda c: (
        threading.Timer(1.5, fake.come_back).start() if c.name.startswith("qsandbox-") else None
    )
    ran = execute(RunSettings(script=script, revoke_after=True), source)
    assert [op for op, _, _ in fake.broker_calls] == ["keys", "revoke"]
    assert in_order(fake.events, "engine lost", "engine back", "create broker:revoke", "list containers")
    assert ran.result.exit_code == 125 and "qsandbox: API key revoked" in ran.err


# -- --revoke-after -----------------------------------------------------------------------------


def test_revoke_after_lists_keys_before_the_hand_off_and_revokes_once_the_sandbox_is_gone(fake, script, source, key):
    ran = execute(RunSettings(script=script, revoke_after=True), source)
    name = fake.sandbox().name
    # The key broker is asked with the key, and told the ids it listed before the run.
    assert fake.broker_calls == [("keys", [], key), ("revoke", ["ApiKey-before-1", "ApiKey-before-2"], key)]
    assert in_order(fake.events, "removed broker:keys", f"key {name}", f"removed {name}", "create broker:revoke")
    assert in_order(fake.events, "removed broker:revoke", "list containers")
    assert ran.result.exit_code == 0
    assert "qsandbox: API key revoked (id ApiKey-the-key); it no longer works anywhere" in ran.err


@pytest.mark.parametrize(("script_code", "run_code"), [(0, 125), (3, 3)])
def test_a_failed_revocation_turns_success_into_125(fake, script, source, script_code, run_code):
    fake.default = Behaviour(exit_code=script_code)
    fake.broker["revoke"] = {"ok": False, "id": "ApiKey-the-key", "error": "IAM said no"}
    ran = execute(RunSettings(script=script, revoke_after=True), source)
    assert ran.result.exit_code == run_code
    assert "qsandbox: REVOKING THE API KEY FAILED: IAM said no" in ran.err


def test_no_revocation_without_revoke_after(fake, script, source):
    execute(RunSettings(script=script), source)
    assert fake.broker_calls == []


# -- a hardening mismatch -----------------------------------------------------------------------


def _writable_root(c: FakeContainer, attrs: dict[str, Any]) -> None:
    attrs["HostConfig"]["ReadonlyRootfs"] = False


def _no_memory_limit(c: FakeContainer, attrs: dict[str, Any]) -> None:
    attrs["HostConfig"]["Memory"] = 0


def _on_the_bridge(c: FakeContainer, attrs: dict[str, Any]) -> None:
    attrs["HostConfig"]["NetworkMode"] = "bridge"


@pytest.mark.parametrize(
    ("alter", "said"),
    [
        (_writable_root, "read-only root: engine has False, wanted True"),
        (_no_memory_limit, "memory limit: engine has 0"),
        (_on_the_bridge, "network: engine has 'bridge', wanted 'none'"),
    ],
)
def test_a_hardening_mismatch_is_refused_with_nothing_started_and_no_key_sent(fake, script, source, alter, said):
    fake.alter_inspect = alter
    with pytest.raises(HardeningMismatch, match=re.escape(said)):
        execute(RunSettings(script=script), source)
    sandbox = fake.sandbox()
    assert fake.named("qsandbox-") == ["create", "inspect", "destroy", "removed"]
    assert sandbox.seen.start is None and fake.broker_calls == []
    assert fake.containers == {}


# -- the closing line ---------------------------------------------------------------------------


def test_the_closing_line_of_a_clean_run(fake, script, source):
    ran = execute(RunSettings(script=script), source)
    assert re.fullmatch(
        rf"qsandbox: run {ran.result.run_id} exit 0 in \d+\.\d\ds; container and secret destroyed \(engine confirms\)",
        ran.result.summary(),
    )
    assert ran.result.run_id in fake.sandbox().name and fake.sandbox().labels[LABEL] == ran.result.run_id


def test_the_closing_line_names_what_the_engine_still_has(fake, script, source):
    def leak(c: FakeContainer) -> None:  # the engine keeps listing a container of this run
        fake.leftover.append({"Id": "l" * 64, "Names": ["/qsandbox-leak"], "Labels": c.labels})

    fake.hooks["create"] = leak
    ran = execute(RunSettings(script=script), source)
    assert ran.result.leftovers == ["container qsandbox-leak"]
    assert ran.result.summary().endswith("; LEFT BEHIND: container qsandbox-leak (run `qsandbox sweep`)")


# -- at the prompt ------------------------------------------------------------------------------


@pytest.fixture
def a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdin is a terminal, so a run without a key source prompts for the key."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Tty())


def test_at_the_prompt_the_sandbox_is_made_ready_while_the_user_types(fake, script, key, a_terminal):
    def typing() -> str:  # the user types until the sandbox has started: it was made meanwhile
        end = time.monotonic() + 10
        while not any(e.startswith("start qsandbox-") for e in fake.events) and time.monotonic() < end:
            time.sleep(0.02)
        fake.say("typed")
        return key

    out, err = io.BytesIO(), io.BytesIO()
    result = run_mod.run(RunSettings(script=script), KeySource(), out=out, err=err, prompt=typing)
    name = fake.sandbox().name
    assert in_order(fake.events, f"start {name}", "typed", f"key {name}")
    assert result.exit_code == 0 and fake.sandbox().seen.start.token == key  # type: ignore[union-attr]


def test_a_bad_key_at_the_prompt_tears_the_ready_sandbox_down_with_nothing_sent(fake, script, a_terminal):
    with pytest.raises(UsageError, match="the API key from the prompt is only 5 characters long"):
        run_mod.run(RunSettings(script=script), KeySource(), out=io.BytesIO(), err=io.BytesIO(), prompt=lambda: "short")
    sandbox = fake.sandbox()
    assert sandbox.seen.start is None  # nothing was sent: the stream closed, the entry point exits 125
    assert fake.named("qsandbox-")[-3:] == ["exit 125", "removed", "gone"]
    assert fake.containers == {}


def test_a_stale_default_image_is_refused_before_anything_is_created(fake, script, source, monkeypatch):
    """An image built from other sources than this qsandbox's (its qsandbox.context label) is refused
    with exit 2 and `qsandbox build`, before the key is read or any container made (issue 25)."""
    import sys

    from qsandbox.common.errors import ImageMissing
    from qsandbox.launcher.engine import image as image_mod

    real = image_mod.context_digest

    def moved_on() -> str:  # the image keeps the digest it was built with; the sources moved on
        return real() if sys._getframe(1).f_globals["__name__"] == "fake_engine" else "f" * 64

    monkeypatch.setattr(image_mod, "context_digest", moved_on)
    with pytest.raises(ImageMissing, match=r"built from other sources .*run `qsandbox build`") as raised:
        execute(RunSettings(script=script), source)
    assert int(raised.value.exit_code) == 2
    assert fake.sandboxes() == []


def test_a_default_run_has_no_network_and_its_clients_use_the_entry_points_proxy(fake, script, source):
    """--platform ibm, --network allowlist: network mode none, the proxy variables pointing at the
    sandbox's own loopback, and no network object made (issue 24); --network open: none of them."""
    execute(RunSettings(script=script), source)
    body = fake.sandbox().body
    env = dict(e.split("=", 1) for e in body["Env"])
    assert body["HostConfig"]["NetworkMode"] == "none"
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:3128" and env["QSANDBOX_RELAY"] == "1"
    assert not [e for e in fake.events if e.startswith("create network")]
    execute(RunSettings(script=script, egress="open"), source)
    body = fake.sandboxes()[-1].body
    assert body["HostConfig"]["NetworkMode"] != "none" and not any(e.startswith("HTTPS_PROXY=") for e in body["Env"])
