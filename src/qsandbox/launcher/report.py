"""Machine-readable reports of a run or a batch: JSON (report.schema.json) and JUnit XML.

Both carry redacted text only: the output recorded here is what the terminal showed (redacted by
the run's output pump), and every text field passes through a `Redactor` for the key once more
before it is written.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..common.errors import ExitCode, UsageError
from ..common.redact import Redactor
from .revoke import Revocation
from .run import RunResult

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
ENGINE_LOST = "the engine went away mid-run"  # RunResult.aborted after an engine loss (run.py)
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

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and self.leftovers == []


def ended(result: RunResult) -> str:
    """How a run ended, as the schema names it."""
    if result.aborted is None:
        return "out-of-memory" if result.exit_code == ExitCode.OOM else "exited"
    return "engine-lost" if result.aborted == ENGINE_LOST else result.aborted


def entry(script: str, result: RunResult, output: str | None = None) -> Entry:
    return Entry(
        script=script,
        run_id=result.run_id,
        exit_code=result.exit_code,
        duration=result.duration,
        ended=ended(result),
        leftovers=list(result.leftovers),
        revocation=result.revocation,
        output=output,
    )


@dataclass(kw_only=True)
class Report:
    """What `run` or `batch` writes with --json and --junit."""

    command: str  # "run" or "batch"
    exit_code: int
    duration: float
    ended: str
    entries: Sequence[Entry]
    revocation: Revocation | None = None
    leftovers: list[str] | None = None  # batch: its own objects (the emulator)
    batch_id: str | None = None
    secrets: list[str] = field(default_factory=list)  # masked once more in every text field

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
            if e.output is not None:
                run["output"] = self._clean(e.output)
            runs.append(run)
        doc: dict[str, object] = {
            "schema_version": SCHEMA_VERSION,
            "qsandbox_version": __version__,
            "command": self.command,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration, 3),
            "ended": self.ended,
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
        """One testsuite `qsandbox`, one testcase per script (classname: its directory)."""
        from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

        suite = TestSuite("qsandbox")
        for e in self.entries:
            script = Path(e.script)
            case = TestCase(script.name, str(script.parent), round(e.duration, 3))
            if e.ended == "not-run":
                case.result = [Skipped("not run (--fail-fast, or the batch was interrupted first)")]
            elif e.error is not None:
                case.result = [Error(self._xml(f"qsandbox: {e.error}"), "qsandbox")]
            elif not e.passed:
                why = f"exit {e.exit_code}" + ("" if e.ended == "exited" else f" ({e.ended})")
                if e.leftovers:
                    why += "; left behind: " + ", ".join(e.leftovers)
                case.result = [Failure(self._xml(why), e.ended)]
            if e.output:
                case.system_out = self._xml(e.output)
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
