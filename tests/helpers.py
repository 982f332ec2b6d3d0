"""Plain helpers the tests import (`from helpers import ROOT, qsandbox`): the project's root, the
real CLI in a subprocess, ending a launcher a test started, what of qsandbox's stderr describes the
machine rather than the run, and the verdict of a leak search. Fixtures stay in conftest.py; a
test module never imports conftest (a folder's own conftest.py would shadow the root's name)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from qsandbox.launcher.checks.audit import Place
from qsandbox.launcher.checks.audit import canary as new_canary

__all__ = ["ROOT", "end", "error_lines", "is_machine_note", "new_canary", "problems", "qsandbox"]

ROOT = Path(__file__).resolve().parents[1]


# What qsandbox writes about the machine it runs on rather than about the run: the preflight's
# warnings (`qsandbox: warning: users alice in group docker can reach the engine ...`, host swap, an
# engine in debug mode) and what it could not check on a remote engine's host (`qsandbox: engine
# access: not checked: ...`). Which of them appear depends on the machine, not on the test.
MACHINE_NOTE = re.compile(r"qsandbox: (warning: |[a-z][a-z ]*: not checked: )")


def is_machine_note(line: str) -> bool:
    return MACHINE_NOTE.match(line) is not None


def error_lines(stderr: str) -> list[str]:
    """qsandbox's stderr without the lines that describe the machine: what a test of a refusal or
    an error asserts on (the refusal line is there, and no other line is)."""
    return [line for line in stderr.strip().splitlines() if not is_machine_note(line)]


def qsandbox(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "qsandbox", *args],
        input=input,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def end(proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 60) -> None:
    """End a process a test started, and close its pipes. A stopped process (Ctrl-Z, SIGSTOP) acts
    on no signal until it is continued, so SIGCONT comes first; then SIGTERM, which a launcher
    answers by destroying its sandbox; SIGKILL if it has not ended within `timeout` seconds. What it
    still writes is read meanwhile (a full pipe would hold it) and thrown away."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None  # communicate() would flush it
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=timeout)
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def problems(places: list[Place]) -> list[str]:
    """Every hit, every place that could not be searched or did not find its own control, and
    every place searched without a control at all: all must be empty for a pass. So each "0 hits"
    a test asserts comes from a search that found what it planted, in the same call."""
    found = [f"{p.name}: {hit}" for p in places for hit in p.hits]
    found += [p.line() for p in places if p.failed]
    return found + [f"NO CONTROL in {p.name}: {p.line()}" for p in places if not p.skipped and not p.planted]
