"""Hostile scripts, each run for real in the sandbox, asserting the exact containment."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys

import pytest
from helpers import ROOT, qsandbox

HOSTILE = ROOT / "tests" / "hostile"


def run(canary: str, script: str, *args: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return qsandbox("run", "--token-stdin", *options, str(HOSTILE / script), *args, input=canary + "\n")


def test_fork_bomb_hits_the_pids_limit(image, canary):
    done = run(canary, "fork_bomb.py", options=("--pids", "64"))
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("fork refused after ") and "Resource temporarily unavailable" in line
    assert int(line.split()[3]) < 64


def test_memory_bomb_is_reported_as_out_of_memory(image, canary):
    done = run(canary, "memory_bomb.py", options=("--memory", "256m"))
    assert done.returncode == 247, done.stderr
    assert "ran out of memory" in done.stderr
    assert " exit 247 " in done.stderr


@pytest.mark.parametrize(("path", "limit"), [("/tmp", 256 << 20), ("~/.qiskit", 64 << 10), ("/run/qsandbox", 64 << 10)])
def test_filling_a_tmpfs_stops_at_its_size(image, canary, path, limit):
    done = run(canary, "fill_tmpfs.py", path)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.endswith("No space left on device"), line
    assert int(line.split()[2]) <= limit


def test_host_files_are_out_of_reach_and_only_output_is_writable(image, canary, tmp_path):
    marker = f"/tmp/qsandbox-marker-{secrets.token_hex(4)}"
    with open(marker, "w") as f:
        f.write("host secret")
    try:
        done = run(canary, "escape_fs.py", marker, options=("--output", str(tmp_path)))
    finally:
        os.unlink(marker)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"read {marker}: No such file or directory" in out
    assert "read /etc/shadow: Permission denied" in out
    assert "read /var/run/docker.sock: No such file or directory" in out
    # /work is a tmpfs the entry point filled and then closed by mode (nothing of the host is mounted)
    assert "write /work/x: Permission denied" in out
    for target in ("/x", "/home/sandbox/x", "/usr/lib/x"):
        assert f"write {target}: Read-only file system" in out
    assert "write /output/ok: OK" in out


def test_privilege_tricks_fail(image, canary):
    done = run(canary, "privileges.py")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for name in ("setuid 0", "setgroups 0", "raw socket", "chown to root", "mknod"):
        assert f"{name}: Operation not permitted" in out, out
    assert "exec from /tmp: Permission denied" in out  # noexec
    assert "su gives uid 0: False" in out
    assert "CapEff: 0000000000000000 NoNewPrivs: 1" in out


def test_a_sandbox_cannot_read_another_live_sandboxs_key(image, canary):
    other = subprocess.Popen(
        [sys.executable, "-m", "qsandbox", "run", "--token-stdin", str(ROOT / "tests/scripts/sleep_forever.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    other.stdin.write(canary + "\n")
    other.stdin.close()
    other.stdin = None
    try:
        assert other.stdout.readline().strip() == "sleeping"
        mine = secrets.token_urlsafe(33)
        done = run(mine, "find_other_key.py", f"{hashlib.sha256(canary.encode()).hexdigest()}:44")
        assert done.returncode == 0, done.stderr
        assert "other key found: False" in done.stdout
        assert int(done.stdout.split()[2]) > 10  # it did look
        # The search itself works: given its own key's hash, it finds it, in its own tmpfs.
        done = run(mine, "find_other_key.py", f"{hashlib.sha256(mine.encode()).hexdigest()}:44")
        assert "other key found: True" in done.stdout
        assert "/run/qsandbox/token" in done.stdout.splitlines()[1].split(), done.stdout
    finally:
        other.terminate()
        other.communicate(timeout=60)


@pytest.mark.parametrize("mode", ["api-key", "short-lived"])
def test_an_api_key_made_during_the_run_is_deleted_with_the_key(image, canary, mode, leak_search):
    """Issue 23, finding 9: with the key or only a token of it, a script makes a new API key for the
    same identity (IAM Identity, POST /v1/apikeys); --revoke-after finds it by listing the
    identity's keys before and after, deletes it, and names it by IAM's id (never its name, which
    the script set to the key)."""
    done = run(canary, "make_api_key.py", options=("--platform", "local", "--revoke-after", "--token-mode", mode))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "token: 200", done.stdout
    assert out[1].startswith("create: 201 ApiKey-"), done.stdout
    made = out[1].split()[2]
    assert out[2] == "new key works: True"  # the control: it was a real, working key
    revoked = [line for line in done.stderr.splitlines() if "API key revoked" in line]
    assert len(revoked) == 1, done.stderr
    assert re.fullmatch(
        rf"qsandbox: API key revoked \(id ApiKey-[0-9a-f-]+, and 1 API key made during the run: {made} created "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d\+0000\); none of them works anywhere",
        revoked[0],
    ), revoked[0]
    assert canary not in done.stdout + done.stderr
    assert leak_search.all_hits() == []
