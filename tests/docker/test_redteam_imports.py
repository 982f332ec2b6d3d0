"""Red team against the import routes into the entry point (PID 1) and the runner, and the hand-off
messages that hold the key (the changes of 2026-12-04: the runner spawned with `-c`, the script run
by hand, tokenwatch duck-typed, handoff's messages hand-written, /work off PID 1's sys.path). Each
test asserts the SAFE behaviour and carries a control proving its attack vector works.

Held:
- no directory on PID 1's import path (the image interpreter's default path, less /work), nor the
  __pycache__ of any qsandbox module, nor $HOME or the user site, is writable by the script; the
  same write succeeds in every tmpfs the sandbox user owns (/tmp, /dev/shm, ~/.qiskit,
  /run/qsandbox, /output), and modules planted there (datetime, qiskit_ibm_runtime, requests, ...,
  sitecustomize, a .pth) are importable by the script but never ran in PID 1 when the script
  itself aborted the run (SIGTERM to PID 1) and the entry point imported the job cancel;
- a hand-off message holding the key does not show it through repr, str, format, %-formatting,
  pprint, reprlib, ascii, vars, iteration or json.

Broke at first, each fixed since and kept here as a test:
- the runner is `python -c RUNNER` with /work as its working directory, so its sys.path started
  with '' (/work), and `from qsandbox.inside.runner import main` resolved `qsandbox` there: a
  `qsandbox` package among the inputs ran in the script's process before the script, unimported by
  it, and could step aside so the run looked normal (the `-m` runner before it resolved the same
  way). RUNNER now drops '' before its import (entry._OURS), and the job cancel on abort, which
  parses an account file the script can rewrite, runs in such a process of its own, not in PID 1;
- a Start or AccessToken pickled with its secrets in the clear (a frozen dataclass did the same):
  pickle and copy are refused now.
"""

from __future__ import annotations

import copy
import json
import pickle
import pprint
import re
import reprlib
from collections.abc import Callable
from typing import Any

import pytest
from helpers import ROOT, qsandbox

from qsandbox.common.handoff import AccessToken, Start

IMPORTS = ROOT / "tests" / "hostile" / "imports"
WRITABLE = (
    "/tmp",
    "/dev/shm",
    "/home/sandbox/.qiskit",
    "/run/qsandbox",
    "/output",
)  # the sandbox tmpfs the script may write


def _run(canary: str, script: str, *options: str):
    return qsandbox("run", "--token-stdin", *options, script, input=canary + "\n")


# -- PID 1's import path -------------------------------------------------------------------------


def test_no_place_the_script_writes_is_on_the_entry_points_import_path(image, canary):
    done = _run(canary, str(IMPORTS / "pid1_path.py"), "--platform", "local")
    lines = done.stdout.splitlines()
    assert done.returncode == 143, done.stderr  # the script's own SIGTERM to PID 1: the abort path
    # The controls: the write probe succeeds where the sandbox user may write, and a module planted
    # there is importable (by the script, with the directory on its path).
    assert [line for line in lines if line.startswith("control ")] == [f"control WROTE {d} (in {d})" for d in WRITABLE]
    for d in WRITABLE:
        assert re.search(rf"planted rt_control in {re.escape(d)} imported by pid (?!1\b)\d+", done.stderr), done.stderr
    # ... and the abort made the entry point import the job cancel and qiskit-ibm-runtime (whatever
    # the cancel then found: this run's jobs, none, or an account it could not use).
    cancel = r"qsandbox-entry: (no Runtime job|job clean-up|cancelled|could not cancel|\d+ job)"
    assert re.search(cancel, done.stderr), done.stderr
    path = json.loads(next(line for line in lines if line.startswith("interpreter path "))[17:])
    assert path and all(p.startswith("/") for p in path), path
    assert "user site enabled False" in lines
    checked = [line for line in lines if line.startswith("path ")]
    assert len(checked) == len(path) + 6, lines  # each entry, three __pycache__, inside/, $HOME, the user site
    assert all(line.startswith("path refused ") for line in checked), checked
    # Nothing planted ran anywhere but in the script's own imports (never PID 1's, never at start).
    ran = re.findall(r"planted (\S+) in (\S+) (?:imported by|ran in) pid (\d+)", done.stderr)
    assert {name for name, _, _ in ran} == {"rt_control"}, ran
    assert "1" not in {pid for _, _, pid in ran}, ran


# -- the runner ----------------------------------------------------------------------------------


def test_a_qsandbox_package_among_the_inputs_does_not_replace_the_runner(image, canary):
    shadow = IMPORTS / "runner_shadow"
    # No --platform local: the inputs land at once, before the runner's interpreter has started (with
    # a local platform to wait for, they may come after its import, and the race goes the other way).
    done = _run(canary, str(shadow / "main.py"), "--workdir", str(shadow))
    assert done.returncode == 0, done.stderr
    assert "script ran" in done.stdout and "control done" in done.stdout
    imported = re.findall(r"shadow qsandbox imported: role=(\w+) pid=(\d+) main=(\S+)", done.stderr)
    # The control: a fresh interpreter in /work (python's rule, cwd first) finds the package.
    assert ("control", "None") in {(role, main) for role, _, main in imported}, done.stderr
    # The guard: nothing in the sandbox imported it on its own (the script never does).
    assert [i for i in imported if i[0] != "control"] == [], imported


# -- the hand-off messages -----------------------------------------------------------------------


def _messages(key: str, lab: str) -> list[Start | AccessToken]:
    return [
        Start(token=key, channel="ibm_quantum_platform", instance="crn:x", lab_token=lab),
        Start(token=key, channel="ibm_cloud", instance=None),
        AccessToken(access_token=key, expiration=1),
    ]


def test_a_message_holding_the_key_never_shows_it_as_text(canary):
    lab = "lab-" + canary[::-1]
    for msg in _messages(canary, lab):
        secret = msg.access_token if isinstance(msg, AccessToken) else msg.token
        assert secret == canary  # the control: the key is in the message, and reachable by name
        shown = [
            repr(msg),
            str(msg),
            format(msg, ""),
            f"{msg} {msg!r} {msg!s} {msg!a}",
            "%s %r" % (msg, msg),  # noqa: UP031 - the old formatting is a route too
            ascii(msg),
            pprint.pformat(msg),
            reprlib.repr(msg),
            repr([msg, {"m": msg}]),
            str(dir(msg)),
        ]
        for text in shown:
            assert canary not in text and lab not in text, text
        routes: tuple[Callable[[Any], object], ...] = (vars, json.dumps, list, tuple)
        for route in routes:
            with pytest.raises(TypeError):
                route(msg)
        with pytest.raises(AttributeError):
            msg.__setattr__("expiration" if isinstance(msg, AccessToken) else "token", "changed")  # immutable
        # copy and deepcopy are refused (with pickle: the same __reduce__): no copy can leak either.
        for copier in (copy.copy, copy.deepcopy):
            with pytest.raises(TypeError, match="may hold the key"):
                copier(msg)


def test_a_message_holding_the_key_does_not_pickle_it(canary):
    plain = pickle.dumps({"token": canary})  # the control: pickle carries a key in the clear
    assert canary.encode() in plain
    for msg in _messages(canary, "lab-" + canary[::-1]):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            with pytest.raises(TypeError, match="may hold the key"):
                pickle.dumps(msg, protocol)
