"""Reports (--json, --junit) and the batch command's refusals, without an engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from qsandbox.common.redact import forms
from qsandbox.launcher.audit import canary as new_canary
from qsandbox.launcher.report import SCHEMA_FILE, Entry, Report, ended, entry
from qsandbox.launcher.revoke import Revocation
from qsandbox.launcher.run import RunResult

SCHEMA = json.loads(SCHEMA_FILE.read_text())


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
            entry("b/slow.py", RunResult("cccccccccccc", 124, 9.0, aborted="timeout"), ""),
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


def test_ended_names() -> None:
    assert ended(RunResult("r", 0, 1.0)) == "exited"
    assert ended(RunResult("r", 247, 1.0)) == "out-of-memory"
    assert ended(RunResult("r", 130, 1.0, aborted="interrupt")) == "interrupt"
    assert ended(RunResult("r", 125, 1.0, aborted="the engine went away mid-run")) == "engine-lost"


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
