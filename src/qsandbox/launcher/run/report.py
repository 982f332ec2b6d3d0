"""Machine-readable reports of a run or a batch: JSON (report.schema.json) and JUnit XML.

Both carry redacted text only: the output recorded here is what the terminal showed (redacted by
the run's output pump), and every text field passes through a `Redactor` for the key once more
before it is written.

What CI systems read of the JUnit file decides its shape: GitLab shows a failure's *body*, not its
`message` attribute, so the body holds the tail of the script's output and the message its last
exception line; `file` is the script as given and `classname` its directory (never `.`, which
GitLab and Jenkins show as an empty group).
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath
from typing import Any, BinaryIO, cast

from ... import __version__
from ...common.errors import UsageError
from ...common.redact import Redactor
from .ending import Ending
from .revoke import Revocation
from .run import RunResult

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
SCHEMA_ID = "https://qsandbox.github.io/qsandbox/schemas/report-v1.json"  # the schema's $id (a test keeps them equal)
SUITE = "qsandbox"  # the JUnit testsuite's name, and the classname of a script in the current directory
FAILURE_TAIL_LINES = 40  # a JUnit failure's body: the last lines of the script's output
FAILURE_TAIL_BYTES = 16 << 10
OUTPUT_LIMIT = 1 << 20  # system-out per testcase, and what `Capture` keeps: the last MiB
# XML 1.0 allows no control characters but tab, newline and carriage return (nor surrogates, FFFE, FFFF).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One script's line in a report."""

    script: str
    run_id: str | None = None
    exit_code: int | None = None
    duration: float = 0.0
    ended: str = "not-run"
    leftovers: list[str] | None = None  # None: the engine was not asked
    revocation: Revocation | None = None
    error: str | None = None
    output: str | None = None
    started_at: datetime | None = None  # when its run began, if the caller knows
    image_id: str | None = None  # the image its sandbox ran (a derived one for a script's own dependencies)

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and self.leftovers == []


def ended(result: RunResult) -> str:
    """How a run ended, as the schema names it."""
    if result.ending is Ending.EXITED:  # a result made without its ending: the exit code tells
        return Ending.of_exit(result.exit_code).value
    return result.ending.value


def entry(script: str, result: RunResult, output: str | None = None) -> Entry:
    """A finished run's entry."""
    return Entry(
        script=script,
        run_id=result.run_id,
        exit_code=result.exit_code,
        duration=result.duration,
        ended=ended(result),
        leftovers=list(result.leftovers),
        revocation=result.revocation,
        output=output,
        started_at=result.started_at,
        image_id=result.image_id,
    )


def last_exception(output: str) -> str | None:
    """The exception line of the last Python traceback in `output` (`ZeroDivisionError: division by
    zero`): the first line after `Traceback (most recent call last):` that is not indented (frames
    and source lines are). None when the output holds no traceback."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if not starts:
        return None
    for line in lines[starts[-1] + 1 :]:
        if line.strip() and not line[0].isspace():
            return line.rstrip()
    return None


def tail(output: str, lines: int = FAILURE_TAIL_LINES, limit: int = FAILURE_TAIL_BYTES) -> str:
    """The last `lines` lines of `output`, within `limit` characters, saying how much was left out."""
    kept = output.splitlines()[-lines:]
    text = "\n".join(kept)
    if len(text) > limit:
        text = text[-limit:]
    cut = len(output.rstrip("\n")) - len(text)
    return (f"[... {cut} earlier characters of output left out ...]\n" if cut > 0 else "") + text


class Capture:
    """What a run writes to the terminal, kept for the report (`run --junit`'s system-out).

    Wrap the streams the run writes to: `Run(..., out=capture.tee(sys.stdout.buffer),
    err=capture.tee(sys.stderr.buffer))`, then `report.entry(script, result, capture.text())`.
    Both streams go into one buffer in the order written, as a terminal shows them; only the last
    `limit` bytes are kept. What reaches the streams is already redacted by the run's output pump.
    """

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self._kept = bytearray()
        self._cut = 0  # bytes dropped from the front
        self._lock = threading.Lock()  # out and err are written from different threads

    def tee(self, stream: BinaryIO) -> BinaryIO:
        return cast(BinaryIO, _Tee(stream, self))

    def add(self, data: bytes) -> None:
        with self._lock:
            self._kept += data
            if len(self._kept) > self.limit:
                drop = len(self._kept) - self.limit
                del self._kept[:drop]
                self._cut += drop

    def text(self) -> str:
        with self._lock:
            body = bytes(self._kept).decode(errors="replace")
            return (f"[... {self._cut} earlier bytes of output left out ...]\n" if self._cut else "") + body


class _Tee:
    """A binary stream that writes through to `stream` and into a `Capture` (isatty and fileno are
    the stream's, so the run treats a terminal as a terminal)."""

    def __init__(self, stream: BinaryIO, capture: Capture) -> None:
        self._stream, self._capture = stream, capture

    def write(self, data: bytes) -> int:
        written = self._stream.write(data)
        self._capture.add(bytes(data))
        return written

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()


@dataclass(kw_only=True)
class Report:
    """What `run` or `batch` writes with --json and --junit.

    `started_at`, when not given, is taken as the time the report is made less the command's
    duration (reports are made as the command ends)."""

    command: str  # "run" or "batch"
    exit_code: int
    duration: float
    ended: str
    entries: Sequence[Entry]
    revocation: Revocation | None = None
    leftovers: list[str] | None = None  # batch: its own objects (the emulator)
    batch_id: str | None = None
    secrets: list[str] = field(default_factory=list)  # masked once more in every text field
    started_at: datetime | None = None
    image_id: str | None = None  # the sandbox image (qsandbox:<version>'s id), if the caller knows
    hostname: str = field(default_factory=socket.gethostname)  # where the launcher ran

    def __post_init__(self) -> None:
        if self.started_at is None:
            self.started_at = datetime.now(UTC) - timedelta(seconds=self.duration)

    @property
    def began(self) -> datetime:
        assert self.started_at is not None  # set in __post_init__
        return self.started_at

    def to_json(self) -> dict[str, object]:
        def revocation(r: Revocation | None) -> dict[str, object] | None:
            return None if r is None else {"ok": r.ok, "detail": self._clean(r.detail)}

        runs: list[dict[str, object]] = []
        for e in self.entries:
            run: dict[str, object] = {
                "script": self._clean(e.script),
                "run_id": e.run_id,
                "exit_code": e.exit_code,
                "passed": e.passed,
                "duration_s": round(e.duration, 3),
                "ended": e.ended,
                "cleaned_up": None if e.leftovers is None else not e.leftovers,
                "leftovers": e.leftovers or [],
                "revocation": revocation(e.revocation),
                "error": None if e.error is None else self._clean(e.error),
            }
            if e.started_at is not None:
                run["started_at"] = _iso(e.started_at)
            if e.image_id is not None:
                run["image_id"] = e.image_id
            if e.output is not None:
                run["output"] = self._clean(e.output)
            runs.append(run)
        doc: dict[str, object] = {
            "schema_version": SCHEMA_VERSION,
            "qsandbox_version": __version__,
            "command": self.command,
            "exit_code": self.exit_code,
            "started_at": _iso(self.began),
            "duration_s": round(self.duration, 3),
            "ended": self.ended,
            "hostname": self.hostname,
            "image_id": self.image_id,
            "revocation": revocation(self.revocation),
            "runs": runs,
        }
        if self.leftovers is not None:
            doc["leftovers"] = self.leftovers
        if self.batch_id is not None:
            doc["batch_id"] = self.batch_id
        return doc

    def write_json(self, path: Path) -> None:
        _write(path, json.dumps(self.to_json(), indent=2) + "\n")

    def write_junit(self, path: Path) -> None:
        """One testsuite `qsandbox` (timestamp: when the command began; hostname: the launcher's),
        one testcase per script: name the script's file name, classname its directory (the suite's
        name for a script in the current directory), file the script as given; a failure's message
        is its last exception line (else how it ended), its body how it ended and the tail of its
        output; system-out the whole output, its last MiB."""
        from junitparser import Error, Failure, JUnitXml, Skipped, TestSuite

        suite = TestSuite(SUITE)
        suite.timestamp = _iso(self.began)
        suite.hostname = self.hostname
        for e in self.entries:
            script = PurePath(e.script)
            directory = script.parent.as_posix()
            case = _case_class()(self._xml(script.name), self._xml(SUITE if directory in ("", ".") else directory))
            case.time = round(e.duration, 3)
            case.file = self._xml(e.script)
            output = self._clean(e.output) if e.output else ""
            if e.ended == "not-run":
                case.result = [Skipped("not run (--fail-fast, or the batch was interrupted first)")]
            elif e.error is not None:
                error = Error(self._xml(f"qsandbox: {e.error}"), "qsandbox")
                error.text = self._xml(f"qsandbox: {e.error}" + (f"\n\n{tail(output)}" if output else ""))
                case.result = [error]
            elif not e.passed:
                why = f"exit {e.exit_code}" + ("" if e.ended == "exited" else f" ({e.ended})")
                if e.leftovers:
                    why += "; left behind: " + ", ".join(e.leftovers)
                failure = Failure(self._xml(last_exception(output) or why), e.ended)
                failure.text = self._xml(why + (f"\n\n{tail(output)}" if output else "\n\n(no output)"))
                case.result = [failure]
            if output:
                case.system_out = self._xml(_last(output, OUTPUT_LIMIT))
            suite.add_testcase(case)
        suite.update_statistics()  # type: ignore[no-untyped-call]  # junitparser is partly typed
        xml = JUnitXml()
        xml.add_testsuite(suite)
        xml.update_statistics()  # type: ignore[no-untyped-call]  # junitparser is partly typed
        suite.time = xml.time = round(self.duration, 3)  # wall time: scripts ran side by side
        tmp = _tmp(path)
        try:
            xml.write(str(tmp), pretty=True)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"cannot write the JUnit report {path}: {e.strerror}") from None

    def _clean(self, text: str) -> str:
        r = Redactor(self.secrets)
        return (r.feed(text.encode()) + r.flush()).decode(errors="replace")

    def _xml(self, text: str) -> str:
        return _NOT_XML.sub("\ufffd", self._clean(text))


@functools.cache
def _case_class() -> type[Any]:
    """A testcase with the `file` attribute GitLab and the GitHub reporters link to (junitparser is
    imported when a report is written, not at every launcher start)."""
    from junitparser import Attr, TestCase

    class Case(TestCase):
        file = Attr()

    return Case


def _iso(moment: datetime) -> str:
    """ISO 8601 to the second, in UTC with its offset (as pytest writes a JUnit timestamp)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _last(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} earlier characters of output left out ...]\n" + text[-limit:]


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a CI system never reads half a report."""
    tmp = _tmp(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write the report {path}: {e.strerror}") from None


def check_writable(*paths: Path | None) -> None:
    """Before anything starts: a report that cannot be written is refused now, not after the run."""
    for p in paths:
        if p is not None and not p.resolve().parent.is_dir():
            raise UsageError(f"cannot write the report {p}: its directory does not exist; create it first")
