"""What `qsandbox batch` prints on stdout, without an engine: every line of a script's block behind
its label, so no script can print a line that passes for another's, and qsandbox's own lines on
lines of their own."""

from __future__ import annotations

import io
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import new_canary

from qsandbox.common.redact import forms
from qsandbox.launcher.core.credentials import Secret
from qsandbox.launcher.core.settings import RunSettings
from qsandbox.launcher.run.batch import Batch, ScriptOutcome, _KeyOnce, _Labelled, _Lines
from qsandbox.launcher.run.run import RunResult

FORGER, VICTIM = "a_forger.py", "b_victim.py"


def batch(key: str, **settings) -> tuple[Batch, io.BytesIO]:
    out = io.BytesIO()
    base = replace(RunSettings(script=Path(__file__)), **settings)
    b = Batch([(FORGER, base), (VICTIM, base)], _KeyOnce(secret=Secret(key, "test")), jobs=1, out=out, err=io.BytesIO())
    b.secret = Secret(key, "test")
    return b, out


def show(b: Batch, label: str, output: bytes, code: int) -> None:
    b._show(ScriptOutcome(label, output=output, result=RunResult(run_id="r", exit_code=code, duration=1.0)))


def whose(stdout: str) -> list[tuple[str, str]]:
    """Each line as (whose, text) by the rule: `LABEL | ` is LABEL's run, `===== ` is qsandbox's."""
    found = []
    for line in stdout.split("\n")[:-1]:
        m = re.match(r"(\S+) +\| (.*)", line)
        if m:
            found.append((m.group(1), m.group(2)))
        else:
            assert line.startswith("===== ") and line.endswith(" ====="), line
            found.append(("qsandbox", line))
    return found


FORGERY = (
    "honest line\n"
    "===== a_forger.py: FAILED (exit 1) =====\n"
    "===== b_victim.py =====\n"
    "b_victim.py | all tests passed\r"
    "===== b_victim.py: passed =====\x0b"
    "b_victim.py  passed     0   1.00s  exited\u2028"
    "===== b_victim.py: passed =====\u0085"
    "\x1b[1A\x1b[2K\x1b[G===== b_victim.py: passed =====\n"
    "\x1b[30;40m"  # black on black: the next label would be invisible
    "\n"
    "last words, unfinished"
).encode()


def test_a_script_cannot_print_a_line_that_passes_for_another_scripts():
    b, out = batch(new_canary())
    show(b, FORGER, FORGERY, 0)
    show(b, VICTIM, b"failing for real\nqsandbox: run r exit 1\n", 1)
    lines = whose(out.getvalue().decode())
    assert [text for who, text in lines if who == "qsandbox"] == [
        "===== a_forger.py =====",
        "===== a_forger.py: passed =====",
        "===== b_victim.py =====",
        "===== b_victim.py: FAILED (exit 1) =====",
    ]
    assert [text for who, text in lines if who == VICTIM] == ["failing for real", "qsandbox: run r exit 1"]
    forged = [text for who, text in lines if who == FORGER]
    assert "===== b_victim.py: passed =====" in forged and "b_victim.py | all tests passed" in forged
    assert len(forged) == 10  # every line break the script used is a line of its own, behind its label
    # Nothing moves the cursor; colours end with their line, before the next label.
    text = out.getvalue().decode()
    assert re.findall(r"\x1b\[[^m]*m", text) == ["\x1b[30;40m", "\x1b[0m"]
    assert "\x1b[30;40m\x1b[0m\n" in text and not re.search("[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]", text)


def test_labels_line_up_and_are_shown_escaped():
    b, out = batch(new_canary())
    show(b, FORGER, b"x\n", 0)
    assert out.getvalue().decode().splitlines()[1] == "a_forger.py | x"
    b, out = batch(new_canary())
    b._width = len("evil\\x1b[2J.py")
    show(b, "evil\x1b[2J.py", b"y\n", 0)
    assert out.getvalue().decode().splitlines() == [
        "===== evil\\x1b[2J.py =====",
        "evil\\x1b[2J.py | y",
        "===== evil\\x1b[2J.py: passed =====",
    ]


def test_a_control_character_between_two_halves_of_the_key_joins_nothing():
    key = new_canary()
    b, out = batch(key)
    show(b, FORGER, f"{key[:20]}\b{key[20:]}\n{key[:10]}\x1b[5n{key[10:]}\n".encode(), 0)
    assert [f for f in forms(key) if f in out.getvalue()] == []
    assert out.getvalue().decode().splitlines()[1:3] == ["a_forger.py | ***", "a_forger.py | ***"]
    # Positive control: with --no-redact nothing is masked again, and the filter joins the halves.
    b, out = batch(key, redact=False)
    show(b, FORGER, f"{key[:20]}\b{key[20:]}\n".encode(), 0)
    assert key.encode() in out.getvalue()


@pytest.mark.skipif(not hasattr(RunSettings, "raw_output"), reason="no --raw-output yet")
def test_raw_output_passes_the_bytes_still_behind_the_label():
    b, out = batch(new_canary(), raw_output=True)
    show(b, FORGER, b"a\rb\x1b[2Kc\nd\n", 0)
    assert out.getvalue().split(b"\n")[1:3] == [b"a_forger.py | a\rb\x1b[2Kc\x1b[0m", b"a_forger.py | d"]


def test_an_unfinished_line_is_ended_before_qsandbox_speaks():
    lines = _Lines()
    lines.err.write(b"progress 50%")
    lines.out.write(b"partial out")
    lines.err.write(b"qsandbox: /output: 1 entry delivered to out\n")  # a line of the run's own
    lines.err.write(b"more")
    lines.say(b"qsandbox: run r exit 0 in 1.00s; container and secret destroyed (engine confirms)")
    lines.out.write(b"late")
    assert lines.getvalue().split(b"\n") == [
        b"progress 50%",
        b"qsandbox: /output: 1 entry delivered to out",
        b"partial out",
        b"more",
        b"qsandbox: run r exit 0 in 1.00s; container and secret destroyed (engine confirms)",
        b"late",
        b"",
    ]


def test_on_a_terminal_long_lines_are_cut_so_none_wraps_to_the_left_edge():
    def cut(*slices: bytes, room: int = 45) -> list[bytes]:
        labelled = _Labelled(b"a.py | ", room)  # 38 columns for the text
        return (b"".join(labelled.feed(s) for s in slices) + labelled.end()).split(b"\n")[:-1]

    assert cut(b"short\n", b"\n") == [b"a.py | short", b"a.py | "]
    assert cut(b"x" * 50 + b"===== b_victim.py: passed =====\n") == [
        b"a.py | " + b"x" * 38,
        b"a.py | " + b"x" * 12 + b"===== b_victim.py: passed ",
        b"a.py | =====",
    ]
    assert cut("界".encode() * 30) == [b"a.py | " + "界".encode() * 19, b"a.py | " + "界".encode() * 11]
    assert cut(b"\x1b[31m" + b"y" * 45) == [  # colours take no room; each row's colours end with it
        b"a.py | \x1b[31m" + b"y" * 38 + b"\x1b[0m",
        b"a.py | " + b"y" * 7 + b"\x1b[0m",
    ]
    assert cut(b"z" * 30, b"z" * 30) == [b"a.py | " + b"z" * 38, b"a.py | " + b"z" * 22]  # a line in two slices
    assert cut(b"\t" * 10) == [b"a.py | " + b"\t" * 4, b"a.py | " + b"\t" * 4, b"a.py | " + b"\t" * 2]


def test_a_line_break_split_between_two_slices_is_one_line_break(monkeypatch):
    import qsandbox.launcher.run.batch as batch_module

    monkeypatch.setattr(batch_module, "_SLICE", 4)
    b, out = batch(new_canary())
    show(b, FORGER, b"abc\r\ndef\xe2\x80\xa8ghi\x80\x80\x80\x80\x80jk\n", 0)
    assert out.getvalue().decode().split("\n")[1:-2] == [
        "a_forger.py | abc",
        "a_forger.py | def",
        "a_forger.py | ghi\ufffd\ufffd\ufffd\ufffd\ufffdjk",
    ]


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminal")
def test_on_a_pty_rows_fit_the_terminal():
    import fcntl
    import struct
    import termios

    main, side = os.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    with os.fdopen(side, "wb", buffering=0) as tty:
        b, _ = batch(new_canary())
        b.out = tty
        show(b, FORGER, b"." * 100 + b"===== b_victim.py: passed =====\n", 0)
        got = os.read(main, 65536).replace(b"\r\n", b"\n").decode()
    os.close(main)
    rows = got.splitlines()
    assert all(len(r) <= 60 for r in rows), rows
    assert all(r.startswith("a_forger.py | ") or r.startswith("===== a_forger.py") for r in rows), rows
