"""Reports (--json, --junit) and the batch command's refusals, without an engine."""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from qsandbox.common.redact import forms
from qsandbox.launcher.checks.audit import canary as new_canary
from qsandbox.launcher.run.ending import Ending
from qsandbox.launcher.run.report import (
    SCHEMA_FILE,
    SCHEMA_ID,
    Capture,
    Entry,
    Report,
    ended,
    entry,
    last_exception,
    tail,
)
from qsandbox.launcher.run.revoke import Revocation
from qsandbox.launcher.run.run import RunResult

SCHEMA = json.loads(SCHEMA_FILE.read_text())
SCHEMA_ENDED = SCHEMA["$defs"]["ended"]["enum"]
CHECK = Path(sys.executable).with_name("check-jsonschema")


def _report(key: str, secrets: list[str]) -> Report:
    printed = f"literal: {key}\nthen a bell \x07 and an escape \x1b[0m\n"
    return Report(
        command="batch",
        exit_code=1,
        duration=3.5,
        ended="exited",
        entries=[
            entry("a/ok.py", RunResult("aaaaaaaaaaaa", 0, 1.25), "fine\n"),
            entry("a/printer.py", RunResult("bbbbbbbbbbbb", 3, 2.0), printed),
            entry("b/slow.py", RunResult("cccccccccccc", 124, 9.0, ending=Ending.TIMEOUT), ""),
            entry("b/left.py", RunResult("dddddddddddd", 0, 1.0, leftovers=["container qsandbox-dd"]), ""),
            Entry(script="c/broken.py", exit_code=2, ended="error", error="script not found: c/broken.py"),
            Entry(script="c/never.py"),
        ],
        revocation=Revocation(ok=True, detail="id ApiKey-1"),
        leftovers=[],
        secrets=secrets,
    )


def test_json_report_validates_and_says_how_each_script_ended(tmp_path: Path) -> None:
    key = new_canary()
    path = tmp_path / "r.json"
    _report(key, [key]).write_json(path)
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, SCHEMA)
    runs = {r["script"]: r for r in doc["runs"]}
    assert [r["passed"] for r in doc["runs"]] == [True, False, False, False, False, False]
    assert runs["b/slow.py"]["ended"] == "timeout" and runs["b/slow.py"]["exit_code"] == 124
    assert runs["b/left.py"]["cleaned_up"] is False and runs["b/left.py"]["leftovers"] == ["container qsandbox-dd"]
    assert runs["c/never.py"] == {
        "script": "c/never.py",
        "run_id": None,
        "exit_code": None,
        "passed": False,
        "duration_s": 0.0,
        "ended": "not-run",
        "cleaned_up": None,
        "leftovers": [],
        "revocation": None,
        "error": None,
    }
    assert doc["revocation"] == {"ok": True, "detail": "id ApiKey-1"}


def test_schema_rejects_what_it_must() -> None:
    """The schema is not a rubber stamp: a wrong version, an unknown ending, a missing field fail."""
    good = _report("x" * 44, []).to_json()
    jsonschema.validate(good, SCHEMA)
    for broken in (
        {**good, "schema_version": 2},
        {**good, "ended": "finished"},
        {k: v for k, v in good.items() if k != "runs"},
        {**good, "runs": [{**good["runs"][0], "exit_code": "0"}]},  # type: ignore[index, dict-item]
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA)


def test_reports_hold_no_form_of_the_key(tmp_path: Path) -> None:
    key = new_canary()
    for secrets, expect_found in (([key], False), ([], True)):  # without the key to mask: positive control
        _report(key, secrets).write_json(tmp_path / "r.json")
        _report(key, secrets).write_junit(tmp_path / "r.xml")
        for name in ("r.json", "r.xml"):
            data = (tmp_path / name).read_bytes()
            found = [f for f in forms(key) if f in data]
            assert bool(found) is expect_found, (name, secrets, found)


def test_junit_report_parses_with_one_case_per_script(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    _report("k" * 44, []).write_junit(path)
    suite = next(iter(JUnitXml.fromfile(str(path))))
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (6, 3, 1, 1)
    cases = {c.name: c for c in suite}
    assert cases["printer.py"].classname == "a"
    assert cases["ok.py"].time == 1.25 and cases["ok.py"].result == []
    failure = cases["printer.py"].result[0]
    assert isinstance(failure, Failure) and failure.message == "exit 3"
    assert "\ufffd" in cases["printer.py"].system_out  # control characters XML cannot hold are replaced
    assert (
        isinstance(cases["slow.py"].result[0], Failure) and cases["slow.py"].result[0].message == "exit 124 (timeout)"
    )
    assert "left behind: container qsandbox-dd" in cases["left.py"].result[0].message
    assert isinstance(cases["broken.py"].result[0], Error)
    assert isinstance(cases["never.py"].result[0], Skipped)


TRACEBACK = """\
step 1 of 3
Traceback (most recent call last):
  File "/work/fit.py", line 3, in <module>
    ratio = 1 / 0
            ~~^~~
ZeroDivisionError: division by zero

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/work/fit.py", line 5, in <module>
    raise RuntimeError(f"fit failed for {key}")
RuntimeError: fit failed for KEY
qsandbox: run eeeeeeeeeeee exit 1 in 1.20s; container and secret destroyed (engine confirms)
"""


def _failing(key: str, secrets: list[str], script: str = "fit.py") -> Report:
    noise = "".join(f"line {i}\n" for i in range(100))  # more than a failure's body holds
    output = noise + TRACEBACK.replace("KEY", key)
    return Report(
        command="batch",
        exit_code=1,
        duration=2.0,
        ended="exited",
        entries=[
            entry(script, RunResult("eeeeeeeeeeee", 1, 1.2), output),
            entry("sub/ok.py", RunResult("f" * 12, 0, 1.0)),
        ],
        secrets=secrets,
    )


def test_junit_failure_body_is_the_redacted_tail_and_message_the_exception(tmp_path: Path) -> None:
    """GitLab shows a failure's body, not its message: a failing script's body is never empty."""
    key = new_canary()
    path = tmp_path / "r.xml"
    _failing(key, [key]).write_junit(path)
    suite = next(iter(JUnitXml.fromfile(str(path))))
    cases = {c.name: c for c in suite}
    failure = cases["fit.py"].result[0]
    assert isinstance(failure, Failure)
    assert failure.message == "RuntimeError: fit failed for ***"
    assert failure.type == "exited"
    body = failure.text
    assert body.startswith("exit 1\n\n[... ")  # how it ended, then what was cut, then the tail
    assert "line 99\nstep 1 of 3\nTraceback" in body and "line 50\n" not in body
    assert "ZeroDivisionError: division by zero" in body and body.rstrip().endswith("(engine confirms)")
    assert len(body.splitlines()) <= 3 + 40
    assert key not in path.read_text() and "line 0\n" in cases["fit.py"].system_out  # system-out: all of it
    # file is the script as given; classname its directory, the suite's name for the current one (never ".")
    elements = {e.get("name"): e for e in suite._elem.iter("testcase")}  # the raw attributes
    assert (elements["fit.py"].get("file"), elements["fit.py"].get("classname")) == ("fit.py", "qsandbox")
    assert (elements["ok.py"].get("file"), elements["ok.py"].get("classname")) == ("sub/ok.py", "sub")
    # The suite says when and where it ran.
    assert suite.hostname
    started = datetime.fromisoformat(suite.timestamp)
    assert started.tzinfo is not None and abs((datetime.now(UTC) - started).total_seconds() - 2.0) < 60


def test_junit_failure_without_output_or_traceback_still_says_why(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    Report(
        command="run",
        exit_code=137,
        duration=1.0,
        ended="exited",
        entries=[entry("quiet.py", RunResult("q" * 12, 137, 1.0))],
    ).write_junit(path)
    failure = next(iter(next(iter(JUnitXml.fromfile(str(path)))))).result[0]
    assert (failure.message, failure.text) == ("exit 137", "exit 137\n\n(no output)")


def test_last_exception_and_tail() -> None:
    assert last_exception(TRACEBACK) == "RuntimeError: fit failed for KEY"
    assert last_exception("all fine\n") is None
    syntax = 'Traceback (most recent call last):\n  File "x.py", line 1\n    x = (\n        ^\nSyntaxError: bad\n'
    assert last_exception(syntax) == "SyntaxError: bad"
    assert last_exception('Traceback (most recent call last):\n  File "x.py", line 1\nMyProblem\n') == "MyProblem"
    assert tail("a\nb\n", lines=5) == "a\nb"
    assert (
        tail("".join(f"{i}\n" for i in range(10)), lines=2)
        == "[... 16 earlier characters of output left out ...]\n8\n9"
    )


def test_capture_tees_and_keeps_the_last_bytes() -> None:
    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    out, err = Terminal(), io.BytesIO()
    capture = Capture(limit=10)
    o, e = capture.tee(out), capture.tee(err)
    assert o.isatty() and not e.isatty()  # the run's terminal filter still sees a terminal
    o.write(b"hello ")
    e.write(b"world\n")
    o.flush()
    assert (out.getvalue(), err.getvalue()) == (b"hello ", b"world\n")
    assert capture.text() == "[... 2 earlier bytes of output left out ...]\nllo world\n"


def test_run_junit_carries_the_captured_output(tmp_path: Path) -> None:
    """What `run --junit` writes once the caller hands it the captured output (cli.py's change)."""
    capture = Capture()
    capture.tee(io.BytesIO()).write(b"Bell counts: {'00': 510, '11': 514}\n")
    path = tmp_path / "r.xml"
    Report(
        command="run",
        exit_code=0,
        duration=1.0,
        ended="exited",
        entries=[entry("bell.py", RunResult("r" * 12, 0, 1.0), capture.text())],
    ).write_junit(path)
    case = next(iter(next(iter(JUnitXml.fromfile(str(path))))))
    assert case.result == [] and case.system_out.strip() == "Bell counts: {'00': 510, '11': 514}"


def test_json_report_says_when_where_and_which_image(tmp_path: Path) -> None:
    """started_at, hostname and image_id, validated by check-jsonschema against the schema file,
    formats included (a started_at that is not a date-time fails: the negative control)."""

    result = RunResult(
        "r" * 12, 0, 1.5, started_at=datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC), image_id="sha256:" + "ab" * 32
    )
    report = Report(
        command="run",
        exit_code=0,
        duration=1.5,
        ended="exited",
        entries=[entry("bell.py", result)],
        image_id="sha256:" + "cd" * 32,
    )
    doc = report.to_json()
    assert doc["image_id"] == "sha256:" + "cd" * 32 and doc["hostname"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", str(doc["started_at"]))
    run = doc["runs"][0]  # type: ignore[index]
    assert (run["started_at"], run["image_id"]) == ("2026-11-27T10:00:00+00:00", "sha256:" + "ab" * 32)
    path = tmp_path / "r.json"
    report.write_json(path)
    done = subprocess.run([str(CHECK), "--schemafile", str(SCHEMA_FILE), str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    path.write_text(json.dumps({**doc, "started_at": "yesterday"}))
    done = subprocess.run([str(CHECK), "--schemafile", str(SCHEMA_FILE), str(path)], capture_output=True, text=True)
    assert done.returncode == 1 and "started_at" in done.stdout, done.stdout


def test_an_older_schema_accepts_a_newer_report() -> None:
    """A reader of version 1 must take a report of a later 1.x: the schema as it was before
    started_at, hostname and image_id accepts a report that has them, and today's schema accepts a
    field not yet invented, at the top, in a run and in a revocation."""
    older = copy.deepcopy(SCHEMA)
    for name in ("started_at", "hostname", "image_id"):
        del older["properties"][name]
        older["$defs"]["run"]["properties"].pop(name, None)
    report = _report("x" * 44, [])
    report.image_id = "sha256:" + "0" * 64
    doc = report.to_json()
    assert {"started_at", "hostname", "image_id"} <= doc.keys()
    jsonschema.validate(doc, older)
    newer = {**doc, "a_later_field": {"any": 1}}
    newer["runs"] = [{**r, "a_later_field": 2} for r in doc["runs"]]  # type: ignore[attr-defined]
    newer["revocation"] = {**doc["revocation"], "a_later_field": 3}  # type: ignore[dict-item]
    jsonschema.validate(newer, SCHEMA)
    jsonschema.validate(newer, older)


def test_schema_has_a_real_id() -> None:
    assert SCHEMA["$id"] == SCHEMA_ID and re.fullmatch(r"https://[\w.-]+/[\w./-]+\.json", SCHEMA_ID)


def test_ended_names() -> None:
    assert ended(RunResult("r", 0, 1.0)) == "exited"
    assert ended(RunResult("r", 247, 1.0)) == "out-of-memory"
    assert ended(RunResult("r", 130, 1.0, ending=Ending.INTERRUPT)) == "interrupt"
    assert ended(RunResult("r", 125, 1.0, ending=Ending.ENGINE_LOST)) == "engine-lost"
    lost = RunResult("r", 125, 1.0, ending=Ending.ENGINE_LOST)
    assert lost.aborted == "the engine went away mid-run" and "(the engine went away mid-run)" in lost.summary()
    assert ended(RunResult("r", 247, 1.0, ending=Ending.of_exit(247))) == "out-of-memory"
    assert {e.value for e in Ending} == set(SCHEMA_ENDED) - {"error", "not-run"}  # the schema names each one


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qsandbox", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        timeout=60,
    )


def test_batch_refuses_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in ("a/x.py", "b/x.py"):
        (tmp_path / p).write_text("pass\n")
    done = _cli("batch", "a/x.py", "b/x.py", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "qsandbox: no API key source and no terminal to prompt on: use --token-stdin, "
        "--token-file PATH, --token-env NAME or --token-command CMD"
    )
    done = _cli("batch", "--platform", "local", "--output", "out", "a/x.py", "b/x.py", cwd=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "qsandbox: --output: two scripts are named x, so their DIR/<stem> would clash: rename one",
    )
    done = _cli("batch", "--platform", "local", "--json", "no/such/dir/r.json", "a/x.py", cwd=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "qsandbox: cannot write the report no/such/dir/r.json: its directory does not exist; create it first",
    )
    done = _cli("batch", "--platform", "local", "a/x.py", "a/missing.py", cwd=tmp_path)
    assert done.returncode == 2 and "script not found" in done.stderr
    assert not (tmp_path / "out").exists()


def test_batch_help_documents_its_exit_codes() -> None:
    done = _cli("batch", "--help", cwd=Path.cwd())
    text = " ".join(done.stdout.split())
    assert "0 every script passed" in text
    assert "1 one or more failed or were not run (--fail-fast)" in text
    assert "130/143/129 the batch was ended by Ctrl-C/SIGTERM/SIGHUP" in text
