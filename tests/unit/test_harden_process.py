"""The launcher makes itself non-dumpable, and refuses to go on (exit 125) when it cannot."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from qsandbox.launcher.core import credentials

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="prctl is Linux's")


class FakeLibc:
    """prctl answers as a kernel that refuses PR_SET_DUMPABLE, or ignores it."""

    def __init__(self, set_result: int, get_result: int) -> None:
        self.set_result, self.get_result = set_result, get_result
        self.calls: list[int] = []

    def prctl(self, option: int, *_args: int) -> int:
        self.calls.append(option)
        return self.set_result if option == 4 else self.get_result


@pytest.mark.parametrize(
    ("set_result", "get_result", "reason"),
    [(-1, 0, "prctl(PR_SET_DUMPABLE, 0)"), (0, 1, "PR_GET_DUMPABLE reads 1 after PR_SET_DUMPABLE 0")],
)
def test_a_launcher_that_cannot_be_made_non_dumpable_exits_125(monkeypatch, capsys, set_result, get_result, reason):
    libc = FakeLibc(set_result, get_result)
    monkeypatch.setattr(credentials.resource, "setrlimit", lambda *_a: None)  # not on the test process
    monkeypatch.setattr(ctypes, "CDLL", lambda *_a, **_k: libc)
    with pytest.raises(SystemExit) as ended:
        credentials.harden_process()
    assert ended.value.code == 125
    err = capsys.readouterr().err
    assert err.startswith(f"qsandbox: cannot make the launcher non-dumpable ({reason}")
    assert "refusing to read the key" in err
    assert libc.calls[0] == 4


def test_no_prctl_symbol_exits_125(monkeypatch, capsys):
    monkeypatch.setattr(credentials.resource, "setrlimit", lambda *_a: None)
    monkeypatch.setattr(ctypes, "CDLL", lambda *_a, **_k: object())  # a static Python: no prctl
    with pytest.raises(SystemExit) as ended:
        credentials.harden_process()
    assert ended.value.code == 125
    assert "cannot make the launcher non-dumpable" in capsys.readouterr().err


def test_the_real_call_leaves_the_process_non_dumpable_without_core_dumps():
    """Read back with PR_GET_DUMPABLE in the process itself (Linux's /proc/PID/status has no
    Dumpable line; tests/docker/test_launcher_hardening.py shows what other processes see)."""
    code = (
        "import ctypes, resource; from qsandbox.launcher.core.credentials import harden_process; harden_process(); "
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)); print(resource.getrlimit(resource.RLIMIT_CORE))"
    )
    # A control first: the same interpreter without the call is dumpable.
    control = code.replace("from qsandbox.launcher.core.credentials import harden_process; harden_process(); ", "")
    before = subprocess.run([sys.executable, "-c", control], capture_output=True, text=True, timeout=60)
    assert before.stdout.splitlines()[0] == "1", before.stdout + before.stderr
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["0", "(0, 0)"]
