"""One `qsandbox run`, end to end: key, sandbox, hand-off, live output, teardown, verification.

Every exit path ends in the same `finally`: the container is gone (the daemon's auto-remove, or
our forced removal), and the engine is asked to confirm that nothing labelled with this run is
left. Ctrl-C, SIGTERM and SIGHUP become an abort message to the entry point, which interrupts the
script and cancels its Runtime jobs; SIGKILL of the launcher closes the attach stream, which the
entry point treats as a dead-man switch.

`Run` tells the story and nothing else. Its mode's plan (plans.py) says what is around the
sandbox; admission.py checks before anything starts, handover.py hands the key in, lifecycle.py
has the clean-up stack, the abort and the waits.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO, cast

from ...common.errors import ExitCode
from ...common.text import shown
from ..core.credentials import KeySource, Secret
from ..core.settings import RunSettings
from ..engine import client as engine
from ..engine import localplatform, sandbox
from . import admission, handover, lifecycle, plans
from .admission import EngineChecked, check_engine
from .ending import Ending, RunResult
from .lifecycle import REMOVAL_WAIT, SIGNAL_REASONS, Abort, Cleanup, Gate, Started
from .revoke import Revocation

__all__ = ["SIGNAL_REASONS", "Cleanup", "EngineChecked", "Run", "RunResult", "check_engine", "run"]


@dataclass(frozen=True)
class InBatch:
    """What a batch gives each of its runs: its slots (the sandbox is made ready, then waits for its
    turn before the key goes in; the wait is not part of the duration), the engine as the batch
    checked it once, and its emulator if it started one. A run in a batch is driven from a worker
    thread: the batch owns the signals and calls `abort()`."""

    gate: Gate
    checked: EngineChecked
    platform: localplatform.LocalPlatform | None = None


class Run:
    """One `qsandbox run`, as its phases: check, prepare, hand off, supervise, tear down, confirm.

    What each phase acquires it registers for clean-up at once: launcher-side things (the stream,
    the heartbeat, the token refresher) on an ExitStack, engine-side things (sandbox, revocation,
    emulator, network) on a `Cleanup` that the ExitStack runs last. `batch`: see InBatch."""

    def __init__(
        self,
        settings: RunSettings,
        source: KeySource,
        *,
        out: BinaryIO,
        err: BinaryIO,
        prompt: Callable[[], str] | None,
        batch: InBatch | None = None,
        lab: plans.Lab | None = None,
    ) -> None:
        self.settings, self.source, self.out, self.err, self.prompt = settings, source, out, err, prompt
        self.batch, self.driven, self.lab = batch, batch is not None, lab  # lab: qsandbox lab (run/lab.py)
        self.plan = plans.plan_for(settings, batch.platform if batch else None)
        self.learned = plans.Learned(settings.image, settings.hardening, self.plan.rehearsal or source.interactive)
        self.cleanup, self.run_id = Cleanup(), sandbox.new_run_id()
        self.started: Started | None = None  # the sandbox, once created, verified, attached and started
        self.handed: handover.HandedOff | None = None
        self.code, self.lost = int(ExitCode.TOOL), False  # lost: the engine stopped answering mid-run
        self.ending: Ending | None = None  # set when something from outside ends the run
        self.revocation: Revocation | None = None
        self.left: list[str] = []  # what the engine still has of this run, after teardown
        self.gate_held, self.handed_off = False, False  # took a batch's slot; the key went in (or was going)
        self._abort_reason: str | None = None  # asked for by abort()
        self._abort_forced = threading.Event()  # asked twice: stop waiting for the entry point
        self._waited, self._done = 0.0, threading.Event()  # seconds at the gate; the output stream ended

    def execute(self) -> RunResult:
        self.learned.started_at = datetime.now(UTC)
        checked = self.batch.checked if self.batch else None
        self.client = admission.check_run(
            self.settings, self.source, self.plan, self.learned, checked=checked, say=self._say, err=self.err,
            lab=self.lab,
        )  # fmt: skip
        began = time.monotonic()
        with ExitStack() as local:
            local.callback(self.tear_down)  # engine side, after the launcher-side steps below
            with cast(AbstractContextManager[object], nullcontext() if self.driven else lifecycle.Signals()):
                try:
                    secret = self.prepare(local)
                    if self.batch is not None:  # our turn among its slots
                        self._waited = lifecycle.wait_for_gate(self.batch.gate, self._check_abort, local)
                        self.gate_held = True
                    self._check_abort()  # before the key goes in: closing the stream ends the sandbox
                    self.handed_off = True
                    self.hand_off(secret, local)
                    del secret
                    self.code = self.supervise()
                except Abort as a:
                    self.ending = Ending(a.reason)
                    self.code = int(self.ending.exit_code or ExitCode.TOOL)
                    if self.started is not None and self.handed_off:  # else closing the stream ends it
                        lifecycle.abort(self.started, a.reason, self._abort_forced if self.driven else None)
                        self._done.wait(REMOVAL_WAIT)  # the rest of the output, and /output, arrive
                except Exception as e:
                    if not engine.went_away(self.client, e):
                        raise
                    self.lost = True
        return self.confirm(time.monotonic() - began - self._waited)

    def abort(self, reason: str) -> None:
        """As a signal or --timeout would (from the thread owning the signals); twice: force it, as Ctrl-C."""
        if self._abort_reason is not None:
            self._abort_forced.set()
        self._abort_reason = self._abort_reason or reason

    def prepare(self, local: ExitStack) -> Secret:
        """Read the key and make the sandbox ready, with what its plan puts around it; returns the key."""
        secret = self.plan.stand_in_key() if self.source.interactive else self.source.read()
        if secret is None:  # at the prompt: the sandbox is made while the user types
            secret = lifecycle.read_key_while(self.source, self.prompt, lambda: self._around_sandbox(None, local))
            admission.refuse_key_in_inputs(self.learned.inputs, secret)  # the sandbox is torn down, no key sent
            return secret
        admission.refuse_key_in_inputs(self.learned.inputs, secret)  # bad input fails before anything starts
        self._around_sandbox(secret, local)
        return secret

    def hand_off(self, secret: Secret, local: ExitStack) -> None:
        """Start the live output, then send the key (or, short-lived, a minted token) into the sandbox."""
        self.handed = handover.hand_off(
            self.client, self.settings, self.learned, self.started, secret,
            out=self.out, err=self.err, done=self._done, say=self._say, driven=self.driven, local=local, lab=self.lab,
        )  # fmt: skip

    def supervise(self) -> int:
        """Wait for the script to end (or --timeout); return its exit code."""
        lifecycle.wait_for_end(self._done, self.settings.timeout, self._check_abort)
        return lifecycle.exit_code(self.started)

    def tear_down(self) -> None:
        """Every engine-side clean-up, then the engine's confirmation; after an engine loss, wait for it."""
        pending = lambda: self.handed is not None and self.handed.to_revoke is not None  # noqa: E731
        self.lost = lifecycle.unwind_confirmed(self.client, self._unwind, self.lost, self.err, pending)
        if self.lost:
            self.ending, self.code = Ending.ENGINE_LOST, int(ExitCode.TOOL)

    def confirm(self, duration: float) -> RunResult:
        """The run's result; a failed revocation turns success into a failure."""
        handed, receiver = self.handed, self.learned.receiver
        if handed is not None:
            handed.live.fresh_line()  # the closing line starts a line of its own, in plain colours
        if receiver is not None and self.handed_off and self.lab is None:  # a lab says what came back itself
            self._say(receiver.closing_note())
        if self.revocation is not None and not self.revocation.ok and self.code == 0:
            self.code = int(ExitCode.TOOL)  # the user asked for a dead key; say loudly it is not
        return RunResult(
            run_id=self.run_id, exit_code=self.code, duration=duration, leftovers=self.left,
            ending=self.ending or Ending.of_exit(self.code), revocation=self.revocation,
            egress_refused=handed.closing.mask(shown(handed.relay.summary())) if handed else "",
            egress_unreachable=handed.closing.mask(shown(handed.relay.unreachable())) if handed else "",
            started_at=self.learned.started_at, image_id=self.started.image_id if self.started else None,
        )  # fmt: skip

    def _check_abort(self) -> None:
        if self._abort_reason is not None:
            raise Abort(self._abort_reason)

    def _unwind(self) -> None:
        """Run the registered clean-up steps, then ask the engine what is left of this run."""
        self.cleanup.unwind()
        self.left = sandbox.leftovers(self.client, self.run_id, networks=self.plan.makes_networks)

    def _say(self, text: str) -> None:
        if self.handed is not None:
            self.handed.live.fresh_line()
        self.err.write(f"qsandbox: {text}\n".encode())
        self.err.flush()

    def _around_sandbox(self, secret: Secret | None, local: ExitStack) -> None:
        self.plan.around_sandbox(
            self.client, self.run_id, secret, self.learned, self.cleanup, lambda: self._make(local)
        )

    def _make(self, local: ExitStack) -> None:
        # Runs after the sandbox is gone, before the emulator and network it may need go; only once the key went in.
        self.cleanup.push("revoke the key (--revoke-after)", self._revoke_if_armed)
        spec = self.learned.sandbox_settings(self.settings)
        self.started = lifecycle.make_sandbox(self.client, spec, self.run_id, self.cleanup, local)

    def _revoke_if_armed(self) -> None:
        self.revocation = (self.handed.revoke(self._say) if self.handed else None) or self.revocation


def run(
    settings: RunSettings,
    source: KeySource,
    *,
    out: BinaryIO | None = None,
    err: BinaryIO | None = None,
    prompt: Callable[[], str] | None = None,
) -> RunResult:
    """Run settings.script in a fresh sandbox, handing it the key read from `source`."""
    return Run(settings, source, out=out or sys.stdout.buffer, err=err or sys.stderr.buffer, prompt=prompt).execute()
