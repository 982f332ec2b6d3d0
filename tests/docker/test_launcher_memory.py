"""A running launcher holds the key in its memory: no other process of its user may read it.

The launcher makes itself non-dumpable (credentials.harden_process). Linux's /proc/PID/status has
no Dumpable line; what a non-dumpable process looks like to others is this: its /proc entries
belong to root, and a process of the same user can neither open its memory nor read its
environment. A dumpable process of the same user, started by the same reader, is the control: the
reader can read its memory (so the refusal is the launcher's doing, not the reader's).
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT

# nobody cannot reach this venv's interpreter (it lives under /root): the system's Python 3.11
# with the venv's packages and the checkout's sources instead.
_PYTHON = "/usr/bin/python3"
_PATH = f"{ROOT / 'src'}:{sysconfig.get_path('purelib')}"

READER = r"""
import os, subprocess, sys

def probe(pid):
    owner = os.stat(f"/proc/{pid}/status").st_uid
    try:
        with open(f"/proc/{pid}/maps") as f:
            start = int(next(l for l in f if " r" in l).split("-")[0], 16)
    except OSError as e:
        start = None
        maps = f"maps {type(e).__name__}"
    else:
        maps = "maps read"
    try:
        with open(f"/proc/{pid}/mem", "rb") as f:
            f.seek(start or 0)
            mem = f"mem read {len(f.read(16))} bytes"
    except OSError as e:
        mem = f"mem {type(e).__name__}"
    try:
        env = f"environ read {len(open(f'/proc/{pid}/environ', 'rb').read())} bytes"
    except OSError as e:
        env = f"environ {type(e).__name__}"
    return f"owner {owner}, {maps}, {mem}, {env}"

launcher = subprocess.Popen(
    [sys.executable, "-m", "qsandbox", "run", "--allow-no-limits", "--token-stdin", sys.argv[1]],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
)
control = subprocess.Popen(["sleep", "300"])
try:
    launcher.stdin.write(sys.argv[2] + "\n")
    launcher.stdin.close()
    launcher.stdin = None  # communicate() must not flush it again
    line = launcher.stdout.readline().strip()
    print("script:", line, flush=True)
    if line == "sleeping":  # the sandbox runs and holds the key; so does the launcher
        print("launcher:", probe(launcher.pid), flush=True)
        print("control:", probe(control.pid), flush=True)
finally:
    control.kill()
    launcher.terminate()
    err = launcher.communicate(timeout=120)[1]
    print("launcher exit:", launcher.returncode, flush=True)
    print(err, file=sys.stderr)
"""


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory nobody can reach, with the script (pytest's tmp_path lies under a root-only one)."""
    d = Path(tempfile.mkdtemp(prefix="qsandbox-nobody-"))
    d.chmod(0o755)  # nobody must reach it; it holds no secret
    shutil.copy(ROOT / "tests" / "scripts" / "sleep_forever.py", d / "sleep_forever.py")
    (d / "sleep_forever.py").chmod(0o644)
    yield d
    shutil.rmtree(d)


def test_a_running_launcher_is_out_of_reach_of_its_own_user(image, canary, public_dir):
    if os.getuid() != 0 or not Path(_PYTHON).exists():
        pytest.skip("needs root to drop to nobody (in the docker group), and a system Python")
    gid = os.stat("/var/run/docker.sock").st_gid
    assert gid != 0 or grp.getgrgid(gid).gr_name == "root"
    done = subprocess.run(
        [_PYTHON, "-c", READER, str(public_dir / "sleep_forever.py"), canary],
        user=65534,
        group=65534,
        extra_groups=[gid],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=public_dir,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", "PYTHONPATH": _PATH},
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "script: sleeping", done.stdout + done.stderr
    # The control, same user, same reader: its memory and environment are readable.
    assert lines[2].startswith("control: owner 65534, maps read, mem read 16 bytes, environ read "), lines
    # The launcher: non-dumpable, so its /proc entries are root's and nothing of it can be read.
    assert lines[1] == "launcher: owner 0, maps PermissionError, mem PermissionError, environ PermissionError", lines
    assert lines[3] == "launcher exit: 143", done.stdout + done.stderr
    assert canary not in done.stdout + done.stderr
