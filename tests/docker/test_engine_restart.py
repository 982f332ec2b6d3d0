"""The engine restarted or crashed mid-run: the key still leaves no trace, and nothing outlives it.

These tests stop the local dockerd (scripts/dockerd.sh), so they run last (conftest) and only
where that dockerd is ours to restart: CI, or a root shell after scripts/setup.sh.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, qsandbox

from qsandbox.common import handoff
from qsandbox.launcher.engine import sandbox

SCRIPTS = ROOT / "tests" / "scripts"
DOCKERD = ["bash", str(ROOT / "scripts" / "dockerd.sh")]


def _dockerd_is_ours() -> bool:
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        return False
    if subprocess.run(["pidof", "dockerd"], capture_output=True).returncode != 0:
        return False
    systemd = (
        shutil.which("systemctl")
        and subprocess.run(["systemctl", "is-active", "--quiet", "docker"], capture_output=True).returncode == 0
    )
    return not systemd  # systemd would restart its dockerd behind our back


@pytest.fixture
def own_dockerd(image):
    if not _dockerd_is_ours():
        if os.environ.get("CI"):
            pytest.fail("CI must run these: dockerd should be root's, started by scripts/setup.sh")
        pytest.skip("needs root and a dockerd started by scripts/setup.sh")
    yield
    subprocess.run([*DOCKERD, "start"], check=True, timeout=120)  # whatever happened, leave one running


pytestmark = [
    pytest.mark.engine_restart,
    pytest.mark.changes_machine("stops, kills and restarts this machine's dockerd (scripts/dockerd.sh)"),
]


def test_audit_with_the_engine_restarted_mid_run(own_dockerd):
    restart = f"bash {ROOT / 'scripts' / 'dockerd.sh'} restart"
    done = qsandbox("audit", "--path", "engine-restart", "--engine-restart", restart, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exit path engine-restart: launcher exit 125, 0 hit(s)" in done.stdout
    assert "0 hit(s) in engine data root" in done.stdout
    assert done.stderr.strip().endswith("qsandbox: audit found 0 hit(s)")


def _entry_processes(marker: str) -> list[int]:
    """Host PIDs of sandbox processes running the script at `marker` (root sees every namespace)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qsandbox.inside.entry" in cmdline and marker.encode() in cmdline:
            found.append(int(pid))
    return found


def test_sandbox_stops_itself_while_the_engine_is_down(own_dockerd, docker_client, canary, leak_search, popen):
    """SIGKILL of dockerd sends no EOF into the sandbox; the heartbeat's silence must end it."""
    marker = f"crash-{secrets.token_hex(4)}"  # an argument, to find the sandbox's processes on the host
    launcher = popen(
        [sys.executable, "-m", "qsandbox", "run", "--token-stdin", str(SCRIPTS / "sleep_forever.py"), marker],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    launcher.stdin.write(canary.encode() + b"\n")
    launcher.stdin.close()
    launcher.stdin = None  # communicate() must not flush it again
    assert launcher.stdout.readline() == b"sleeping\n"
    assert _entry_processes(marker), "the sandbox should be running"

    subprocess.run(["pkill", "-KILL", "-x", "dockerd"], check=True)
    killed = time.monotonic()
    while _entry_processes(marker) and time.monotonic() - killed < handoff.HEARTBEAT_TIMEOUT + 15:
        time.sleep(0.5)
    gone_after = time.monotonic() - killed
    assert not _entry_processes(marker), "the sandbox kept running, with the key, while the engine was down"
    assert subprocess.run(["pidof", "dockerd"], capture_output=True).returncode != 0, "engine came back by itself"
    assert gone_after > handoff.HEARTBEAT_TIMEOUT - 2 * handoff.HEARTBEAT_INTERVAL - 1, (
        f"gone after {gone_after:.1f}s: something other than the heartbeat ended it"
    )

    subprocess.run([*DOCKERD, "start"], check=True, timeout=120)
    _out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 125, err.decode()
    assert b"lost the container engine mid-run" in err
    assert b"the engine is back and confirms the clean-up" in err
    assert err.rstrip().endswith(b"container and secret destroyed (engine confirms)")
    assert sandbox.leftovers(docker_client) == []
    assert leak_search.all_hits() == []
