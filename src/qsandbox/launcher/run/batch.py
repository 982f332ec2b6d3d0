"""`qsandbox batch`: many scripts in one launcher, each in its own fresh sandbox, N at a time.

The key is read once, from the usual sources. Each script is one `Run` (its own container, its own
tmpfs, its own run id), driven from a worker thread; this module's thread owns the signals
(`signal.signal` works only in the main thread) and, on SIGINT, SIGTERM or SIGHUP, stops starting
scripts and aborts every live run, which then tears itself down as `qsandbox run` would. Each
script's output (redacted by its run) is buffered and printed whole when it ends, every line of it
behind the script's label (see `_show`: no script can print a line that passes for another's). With
`--platform local` the batch starts one emulator for all its scripts and removes it at the end;
`--revoke-after` revokes the key once, after the last script.
"""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

import docker

from ...common.errors import ExitCode, QsandboxError
from ...common.redact import Redactor
from ...common.text import shown
from ..core.credentials import KeySource, Secret
from ..core.settings import RunSettings
from ..engine import localplatform, sandbox
from . import egress, plans
from .ending import Ending
from .relay import Egress, parse_connect_to
from .report import Entry, Report, entry
from .revoke import Broker, Revocation
from .run import SIGNAL_REASONS, EngineChecked, InBatch, Run, RunResult, check_engine
from .terminal import ControlFilter

BATCH_FAILED = ExitCode.FAILURE  # one script or more did not pass (or was not run after --fail-fast)
POLL = 0.2  # how often the main thread looks up from waiting (signal handlers run between looks)
# What starts a line on some reader's screen or in some parser besides a newline: CR (a terminal,
# GitLab's log viewer), VT, FF, FS, GS, RS, NEL, LINE and PARAGRAPH SEPARATOR (str.splitlines).
_LINE_BREAKS = re.compile(rb"\r\n?|[\x0b\x0c\x1c-\x1e]|\xc2\x85|\xe2\x80[\xa8\xa9]")
_OURS = b"qsandbox: "  # how every line of qsandbox's own in a run's output begins
_RESET = b"\x1b[0m"
_COLUMN = re.compile(r"\x1b\[[0-9;:]*m|.", re.S)  # after the terminal filter: colours, or one character
_SLICE = 1 << 20  # a script's output is labelled and printed a slice at a time


@dataclass(frozen=True, kw_only=True)
class _KeyOnce(KeySource):
    """The batch's key, read once; each run takes it from here instead of reading its source again."""

    secret: Secret = field(repr=False)

    def check(self) -> None:
        return None

    @property
    def interactive(self) -> bool:
        return False

    def read(self, prompt: Callable[[], str] | None = None) -> Secret:
        return self.secret


@dataclass
class ScriptOutcome:
    """One script of the batch: its run's result, or the error that ended it, and its output."""

    label: str  # the script as given on the command line
    output: bytes = b""
    result: RunResult | None = None
    error: QsandboxError | None = None
    duration: float = 0.0

    @property
    def ran(self) -> bool:
        return self.result is not None or self.error is not None

    @property
    def exit_code(self) -> int | None:
        if self.result is not None:
            return self.result.exit_code
        return None if self.error is None else int(self.error.exit_code)

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.exit_code == 0 and not self.result.leftovers

    def entry(self) -> Entry:
        text = self.output.decode(errors="replace")
        if self.result is not None:
            return entry(self.label, self.result, text)
        if self.error is not None:
            return Entry(
                script=self.label,
                exit_code=int(self.error.exit_code),
                duration=self.duration,
                ended="error",
                error=str(self.error),
                output=text,
            )
        return Entry(script=self.label)


@dataclass
class BatchResult:
    batch_id: str  # labels the batch's own objects (its emulator)
    scripts: list[ScriptOutcome]
    exit_code: int
    duration: float
    aborted: str | None = None  # the signal that ended the batch
    revocation: Revocation | None = None
    leftovers: list[str] = field(default_factory=list)  # the batch's own objects (its emulator)

    def report(self, secrets: list[str]) -> Report:
        return Report(
            command="batch",
            exit_code=self.exit_code,
            duration=self.duration,
            ended=self.aborted or ("exited" if all(s.ran for s in self.scripts) else "not-run"),
            entries=[s.entry() for s in self.scripts],
            revocation=self.revocation,
            leftovers=self.leftovers,
            batch_id=self.batch_id,
            secrets=secrets,
        )

    def table(self) -> str:
        """The summary a user reads at the end: one line per script, then the totals."""
        width = max([len(s.label) for s in self.scripts] + [6])
        lines = [f"{'script':{width}}  {'result':7} {'exit':>4} {'time':>7}  ended"]
        for s in self.scripts:
            e = s.entry()
            result = "passed" if s.passed else ("-" if not s.ran else "FAILED")
            code = "-" if e.exit_code is None else str(e.exit_code)
            how = e.ended if e.error is None else f"error: {e.error}"
            lines.append(f"{s.label:{width}}  {result:7} {code:>4} {e.duration:6.2f}s  {how}")
        passed = sum(s.passed for s in self.scripts)
        not_run = sum(not s.ran for s in self.scripts)
        failed = len(self.scripts) - passed - not_run
        why = f" ({self.aborted})" if self.aborted else ""
        lines.append(
            f"qsandbox: batch {self.batch_id}: {len(self.scripts)} scripts: {passed} passed, {failed} failed, "
            f"{not_run} not run in {self.duration:.2f}s; exit {self.exit_code}{why}"
        )
        if self.leftovers:
            lines.append("LEFT BEHIND: " + ", ".join(self.leftovers) + " (run `qsandbox sweep`)")
        return "\n".join(lines)


class _Lines:
    """One script's output, both streams in one buffer, a whole line at a time.

    Each stream keeps its unfinished line to itself, so a line of stdout and one of stderr never
    end up glued together (each stream's redactor holds back a tail until it knows it is no key).
    qsandbox's own lines start a line of their own: a script's unfinished line is ended before
    one (the run's lines all begin `qsandbox: `; the batch's go through `say`), so a script cannot
    make its last words the start of qsandbox's next line. At the end, unfinished lines are ended.
    """

    def __init__(self) -> None:
        self._lines: list[bytes] = []
        self._lock = threading.Lock()
        self.out, self.err = _LineWriter(self), _LineWriter(self)

    def add(self, data: bytes) -> None:
        self._lines.append(data)  # under _lock, held by the caller

    def say(self, line: bytes) -> None:
        """One line of qsandbox's own, after the script's unfinished lines, each ended."""
        with self._lock:
            for writer in (self.out, self.err):
                writer.end_line()
            self.add(line if line.endswith(b"\n") else line + b"\n")

    def getvalue(self) -> bytes:
        """Everything so far, the unfinished lines last, each ended."""
        with self._lock:
            return b"".join([*self._lines, *(w.pending + b"\n" for w in (self.out, self.err) if w.pending)])


class _LineWriter(io.BytesIO):
    def __init__(self, into: _Lines) -> None:
        super().__init__()
        self.into, self.pending = into, b""

    def write(self, data: bytes) -> int:  # type: ignore[override]  # bytes only, as Run writes
        data = bytes(data)
        with self.into._lock:
            if data.startswith(_OURS):  # qsandbox speaks (or the script's output says so: a line break more)
                self.end_line()
            *whole, self.pending = (self.pending + data).split(b"\n")
            if whole:
                self.into.add(b"".join(line + b"\n" for line in whole))
        return len(data)

    def end_line(self) -> None:
        """The unfinished line, ended (under the buffer's lock)."""
        if self.pending:
            self.into.add(self.pending + b"\n")
            self.pending = b""


class _Turns:
    """The batch's slots, taken in the scripts' order: a run takes one before its key goes in and
    gives it back when it ends, so sandboxes made ready ahead never overtake an earlier script.

    With --fail-fast a slot is given back only once the batch has seen how the run ended
    (`free()`), so no next script starts before a failure has stopped the batch. A run that ends
    without taking its turn (an error, or ended while waiting) is skipped (`skip()`).
    """

    def __init__(self, slots: int, *, deferred: bool) -> None:
        self.deferred = deferred
        self._free, self._next, self._skipped = slots, 0, set[int]()
        self._cond = threading.Condition()

    def ticket(self, number: int) -> _Ticket:
        return _Ticket(self, number)

    def take(self, number: int, timeout: float | None) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self._next == number and self._free > 0, timeout):
                return False
            self._free -= 1
            self._advance()
            return True

    def free(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    def skip(self, number: int) -> None:
        with self._cond:
            self._skipped.add(number)
            self._advance()

    def _advance(self) -> None:
        self._next += 1
        while self._next in self._skipped:
            self._next += 1
        self._cond.notify_all()


class _Ticket:
    """One run's place in the turns, with the acquire/release a Run's gate has."""

    def __init__(self, turns: _Turns, number: int) -> None:
        self.turns, self.number = turns, number

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self.turns.take(self.number, timeout if timeout >= 0 else None)

    def release(self) -> None:
        if not self.turns.deferred:
            self.turns.free()


class Batch:
    """Scripts, each with its settings, run `jobs` at a time under one key."""

    def __init__(
        self,
        scripts: Sequence[tuple[str, RunSettings]],
        source: KeySource,
        *,
        jobs: int,
        ahead: int | None = None,
        fail_fast: bool = False,
        revoke_after: bool = False,
        out: BinaryIO,
        err: BinaryIO,
        prompt: Callable[[], str] | None = None,
    ) -> None:
        self.scripts, self.source, self.jobs, self.fail_fast = list(scripts), source, max(1, jobs), fail_fast
        # Sandboxes made ready ahead of their turn (created, verified, started, waiting for the key),
        # so a script starts the moment a slot frees instead of after an engine round trip or ten.
        self.ahead = self.jobs if ahead is None else max(0, ahead)
        self._turns = _Turns(self.jobs, deferred=fail_fast)
        self.revoke_after, self.out, self.err, self.prompt = revoke_after, out, err, prompt
        self.batch_id = sandbox.new_run_id()  # labels the batch's own emulator
        self._width = max(len(shown(label)) for label, _ in self.scripts)  # labels padded to line up
        self.secret: Secret | None = None
        self.aborted: str | None = None
        self._live: dict[Future[None], Run] = {}
        self._cancelled: set[Run] = set()  # ready, never handed the key: --fail-fast ended them
        self._lock = threading.Lock()

    def execute(self) -> BatchResult:
        began = time.monotonic()
        platform_kind = self.scripts[0][1].platform
        # Engine, preflight and image checked once for every run (warnings said once), with one
        # client; before the key is read, so a refusal never waits for a prompt.
        checked = check_engine(self.scripts[0][1], self.err)
        # A rehearsal needs no real key: without a source, one throwaway key serves the whole batch.
        stand_in = plans.plan_for(self.scripts[0][1]).stand_in_key() if self.source.interactive else None
        self.secret = stand_in or self.source.read(self.prompt)
        outcomes = [ScriptOutcome(label) for label, _ in self.scripts]
        revocation: Revocation | None = None
        before: tuple[str, ...] | None = None  # --revoke-after: the identity's API keys before any run
        leftovers: list[str] = []
        client = checked.client
        platform: localplatform.LocalPlatform | None = None
        with self._signals():
            try:
                if platform_kind == "local":
                    image = self.scripts[0][1].image
                    platform = localplatform.start(
                        client,
                        image,
                        self.batch_id,
                        [localplatform.digest(self.secret)],
                        sandbox.hardening_for(client),
                        queue_time=self.scripts[0][1].queue_time,  # --queue-time: one emulator, the batch's
                    )
                if self.revoke_after:
                    before = self._broker(client, platform).api_keys()
                self._run_all(outcomes, platform, checked)
            finally:
                if self.revoke_after and any(o.ran for o in outcomes):
                    revocation = self._revoke(client, platform, before)
                if platform is not None:
                    localplatform.stop(client, platform)
                leftovers = sandbox.leftovers(client, self.batch_id)
        code = self._exit_code(outcomes, revocation, leftovers)
        return BatchResult(
            batch_id=self.batch_id,
            scripts=outcomes,
            exit_code=code,
            duration=time.monotonic() - began,
            aborted=self.aborted,
            revocation=revocation,
            leftovers=leftovers,
        )

    # -- the steps ------------------------------------------------------------------------------

    def _run_all(
        self, outcomes: list[ScriptOutcome], platform: localplatform.LocalPlatform | None, checked: EngineChecked
    ) -> None:
        assert self.secret is not None  # read in execute() first
        source = _KeyOnce(secret=self.secret)
        queue = list(enumerate(self.scripts))
        stopping = False
        owner: dict[Future[None], ScriptOutcome] = {}
        owner_index: dict[Future[None], int] = {}
        with ThreadPoolExecutor(self.jobs + self.ahead, thread_name_prefix="qsandbox-batch") as pool:
            try:
                while queue or self._live:
                    while queue and len(self._live) < self.jobs + self.ahead and not stopping and self.aborted is None:
                        index, (_, settings) = queue.pop(0)
                        buffer = _Lines()
                        # Revocation is the batch's, after its last script: never per run.
                        run = Run(
                            _no_revoke(settings),
                            source,
                            out=buffer.out,
                            err=buffer.err,
                            prompt=None,
                            batch=InBatch(self._turns.ticket(index), checked, platform),
                        )
                        future = pool.submit(self._one, run, outcomes[index], buffer)
                        with self._lock:
                            self._live[future] = run
                        owner[future] = outcomes[index]
                        owner_index[future] = index
                    if not self._live:
                        break
                    done, _ = wait(list(self._live), timeout=POLL, return_when=FIRST_COMPLETED)
                    for future in done:
                        with self._lock:
                            run = self._live.pop(future)
                        future.result()  # a bug in a run (not a QsandboxError) surfaces here
                        outcome = owner.pop(future)
                        if outcome.ran:
                            self._show(outcome)
                        if self.fail_fast and outcome.ran and not outcome.passed and not stopping:
                            stopping = True
                            self._cancel_waiting()
                        number = owner_index.pop(future)
                        if not run.gate_held:
                            self._turns.skip(number)  # it never took its turn: later scripts may go
                        elif self._turns.deferred:
                            self._turns.free()  # after the fail-fast decision above
            except BaseException:
                self._abort_all("interrupt")  # a bug: end every live run cleanly before the traceback
                raise

    def _one(self, run: Run, outcome: ScriptOutcome, buffer: _Lines) -> None:
        """In a worker thread: one script, start to confirmed teardown."""
        began = time.monotonic()
        try:
            result = run.execute()
            if run.handed_off or (self.aborted is None and run not in self._cancelled):
                outcome.result = result  # else ended while waiting for its turn: not run
        except QsandboxError as e:
            outcome.error = e
            buffer.say(f"qsandbox: {e}".encode())
        finally:
            outcome.duration = time.monotonic() - began
            if outcome.result is not None:
                buffer.say(outcome.result.summary().encode())
            outcome.output = buffer.getvalue()

    def _show(self, outcome: ScriptOutcome) -> None:
        """The script's whole output, as one block, when it ends, every line behind its label:

            ===== tests/a.py =====
            tests/a.py | what a.py printed, line by line
            tests/a.py | qsandbox: run 3f2c... exit 0 in 1.20s; container and secret destroyed (...)
            ===== tests/a.py: passed =====

        The rule for a reader and for a parser: a line starting `LABEL | ` was printed by LABEL's run
        (its script, or qsandbox about it), and only qsandbox's own lines start `===== `, the last
        one of a block saying whether LABEL passed. A script can print anything, a fake `=====
        other.py: passed =====` or a fake summary row included, but only behind its own label.

        Why a label on every line rather than a per-batch random value in the separators (printed in
        the summary to check them against): the label is what a reader sees at a glance in the log
        itself; a random value protects only a reader who compares it with the summary, which nobody
        does while scrolling a CI log. A label is only as good as the line breaks, so, unless
        --raw-output, nothing but a newline starts a line: the other characters that do on some
        reader (`_LINE_BREAKS`: a carriage return on a terminal and in GitLab's log, NEL, ...) end
        the line like a newline (a progress bar's updates become lines of their own), and the
        terminal filter takes every other control and escape sequence away (cursor moves, erasing:
        what could draw over another line), wherever stdout goes: a CI log is read on a terminal
        too (`cat job.log`). A line that sets colours ends with a reset, so the next label is never
        drawn invisible. On a terminal, a line longer than the terminal is wide is cut into lines of
        its own, each behind the label, so none wraps to the left edge and looks like qsandbox's
        (a log viewer that wraps long lines can still do that: the verdict lines, the summary and
        the reports are the authority). The filtered text is masked again, since a control character
        dropped from between two halves of the key would join them. The reports (--json, --junit)
        keep the output as the run gave it.
        """
        settings = self.scripts[0][1]
        raw = settings.raw_output  # --raw-output
        label = shown(outcome.label)
        room = None if raw else _columns(self.out)
        labelled = _Labelled(f"{label:{self._width}} | ".encode(), room)
        control = None if raw else ControlFilter()
        again = Redactor([self.secret.reveal()]) if control is not None and settings.redact and self.secret else None
        state = "passed" if outcome.passed else f"FAILED (exit {outcome.exit_code})"
        output, carry = outcome.output, b""
        try:
            self.out.write(f"===== {label} =====\n".encode())
            for start in range(0, len(output), _SLICE):  # a slice at a time: no copy of it all, labelled
                data, last = carry + output[start : start + _SLICE], start + _SLICE >= len(output)
                if control is not None:
                    keep = 0 if last else _break_start(data)
                    data, carry = data[: len(data) - keep], data[len(data) - keep :]
                    data = control.feed(_breaks_ended(data)) + (control.flush() if last else b"")
                if again is not None:
                    data = again.feed(data) + (again.flush() if last else b"")
                self.out.write(labelled.feed(data))
            self.out.write(labelled.end() + f"===== {label}: {state} =====\n".encode())
            self.out.flush()
        except (OSError, ValueError):  # our terminal is gone (SIGHUP): the reports still get it
            pass

    def _broker(self, client: docker.DockerClient, platform: localplatform.LocalPlatform | None) -> Broker:
        """The batch's key broker: on the emulator's network with its CA, or with no network through
        the relay, under the batch's --allow-host and --connect-to."""
        assert self.secret is not None  # read in execute() first
        first = self.scripts[0][1]
        if platform is None and first.platform == "shared":
            platform = localplatform.shared(client)
        if platform is not None:
            return Broker(client, first.image, self.secret, network=platform.network, ca_pem=platform.ca_pem)
        rules = Egress(egress.allowlist(first.allow_hosts), dict(parse_connect_to(c) for c in first.connect_to))
        ca_pem = first.ca_file.read_text() if first.ca_file is not None else None
        return Broker(client, first.image, self.secret, ca_pem=ca_pem, egress=rules)

    def _revoke(
        self, client: docker.DockerClient, platform: localplatform.LocalPlatform | None, before: tuple[str, ...] | None
    ) -> Revocation:
        result = self._broker(client, platform).revoke(before)
        self.err.write(result.line().encode() + b"\n")
        self.err.flush()
        return result

    def _exit_code(self, outcomes: list[ScriptOutcome], revocation: Revocation | None, leftovers: list[str]) -> int:
        if self.aborted is not None:
            return int(Ending(self.aborted).exit_code or ExitCode.TOOL)
        if leftovers or any(o.result is not None and o.result.leftovers for o in outcomes):
            return int(ExitCode.TOOL)
        if revocation is not None and not revocation.ok:
            return int(ExitCode.TOOL)
        return int(ExitCode.OK) if all(o.passed for o in outcomes) else int(BATCH_FAILED)

    # -- signals --------------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        """Stop starting scripts and end every live run (a second call forces their removal)."""
        if self.aborted is None:
            self.aborted = reason
            self.err.write(f"qsandbox: batch {reason}: ending every live sandbox\n".encode())
            self.err.flush()
        self._abort_all(reason)

    def _cancel_waiting(self) -> None:
        """--fail-fast: end the sandboxes made ready ahead of their turn (no key went into them)."""
        with self._lock:
            waiting = [run for run in self._live.values() if not run.handed_off]
        for run in waiting:
            self._cancelled.add(run)
            run.abort("interrupt")

    def _abort_all(self, reason: str) -> None:
        with self._lock:
            live = list(self._live.values())
        for run in live:
            run.abort(reason)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT, SIGTERM and SIGHUP abort the batch (main thread; handlers only set flags)."""
        old = {s: signal.getsignal(s) for s in SIGNAL_REASONS}
        for s, reason in SIGNAL_REASONS.items():
            signal.signal(s, lambda *_, reason=reason: self.abort(reason))
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def _columns(stream: BinaryIO) -> int | None:
    """How wide the terminal `stream` writes to is, or None if it is no terminal."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else None
    except (AttributeError, ValueError, OSError):
        return None


def _breaks_ended(data: bytes) -> bytes:
    """`data` with every other line break (`_LINE_BREAKS`) a newline (the search only if one is there)."""
    if any(b in data for b in (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80")):
        return _LINE_BREAKS.sub(b"\n", data)
    return data


def _break_start(data: bytes) -> int:
    """How many bytes at the end of `data` may begin a line break (`_LINE_BREAKS`) the next slice ends."""
    if data.endswith(b"\xe2\x80"):
        return 2
    return 1 if data[-1:] in (b"\r", b"\xc2", b"\xe2") else 0


def _most_columns(data: bytes) -> int:
    """The most columns a byte of `data` (filtered: text and colours) can take on a terminal: one
    in ASCII without tabs, else eight (a tab; a wide character's two columns take 3 bytes)."""
    return 1 if data.isascii() and b"\t" not in data else 8


class _Labelled:
    """A script's output, fed in slices, every line of it behind `prefix` (see `Batch._show`): a
    line that sets colours ends with a reset, and with `room` (a terminal's width less the label's)
    a longer line is cut into rows that fit, each behind the label."""

    def __init__(self, prefix: bytes, room: int | None) -> None:
        self.prefix, self.room = prefix, None if room is None else max(room - len(prefix), 20)
        self.fresh = True  # at the start of a line: the label comes first
        self.coloured = False  # this line sets colours
        self.used = 0  # columns taken on this row (with room)

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        if b"\x1b" not in data and not self.coloured and self._fits(data):
            return self._plain(data)
        out = []
        for n, piece in enumerate(data.split(b"\n")):
            if n:
                out.append(self._end())
            if piece:
                out.append(self._text(piece))
        return b"".join(out)

    def _fits(self, data: bytes) -> bool:
        """Whether every line of `data` fits its row (always without room); if so, its row counted."""
        if self.room is None:
            return True
        lines, each = data.split(b"\n"), _most_columns(data)
        if self.used + each * max(map(len, lines)) > self.room:
            return False
        self.used = (self.used if len(lines) == 1 else 0) + each * len(lines[-1])
        return True

    def _plain(self, data: bytes) -> bytes:
        """Text without colours, every line fitting: the label after each newline, in one replace
        (a script printing millions of short lines costs no loop a line)."""
        head = self.prefix if self.fresh else b""
        body = data.replace(b"\n", b"\n" + self.prefix)
        self.fresh = data.endswith(b"\n")
        return head + (body[: len(body) - len(self.prefix)] if self.fresh else body)

    def end(self) -> bytes:
        """The last line, ended if it was not (_Lines ends them all: this is for the reader's sake)."""
        return b"" if self.fresh else self._end()

    def _end(self) -> bytes:
        line = (self.prefix if self.fresh else b"") + (_RESET if self.coloured else b"") + b"\n"
        self.fresh, self.coloured, self.used = True, False, 0
        return line

    def _text(self, piece: bytes) -> bytes:
        colours = b"\x1b" in piece
        rows = [piece] if self.room is None else self._rows(piece, self.room)
        out = []
        for n, row in enumerate(rows):
            if n:
                out.append(self._end())  # a row full: the rest on a row of its own, behind the label
            if self.fresh:
                out.append(self.prefix)
                self.fresh = False
            self.coloured = self.coloured or colours
            out.append(row)
        return b"".join(out)

    def _rows(self, piece: bytes, room: int) -> list[bytes]:
        """`piece` (filtered: text and colours) cut where this row is full, counted generously (a
        wide or ambiguous character as two, a tab as eight), so that no row wraps."""
        if _most_columns(piece) == 1 and b"\x1b" not in piece:  # plain ASCII: a byte a column
            first = room - self.used
            rows = [piece[:first], *(piece[i : i + room] for i in range(first, len(piece), room))]
            self.used = len(rows[-1]) if len(rows) > 1 else self.used + len(piece)
            return rows
        text = piece.decode(errors="replace")
        rows, start = [], 0
        for m in _COLUMN.finditer(text):
            ch = m.group()
            width = 0 if len(ch) > 1 else 8 if ch == "\t" else 2 if unicodedata.east_asian_width(ch) in "WFA" else 1
            if self.used + width > room:
                rows.append(text[start : m.start()].encode())
                start, self.used = m.start(), 0
            self.used += width
        rows.append(text[start:].encode())
        return rows


def _no_revoke(settings: RunSettings) -> RunSettings:
    from dataclasses import replace

    return replace(settings, revoke_after=False)
