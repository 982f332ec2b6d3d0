"""A host account with the sandbox's uid reads the key through /proc (issue 23): when root runs
qsandbox on a rootful engine without userns-remap, the sandbox's uid is a host uid. Here, as root,
accounts with the image's uid 10001 (what root's sandbox used to run as) and with the first uid of
the unused range are made before a run; while the run holds the key, each of them tries to read
it through /proc/<pid>/root of every process of the sandbox, and must fail. The control, in the
same run: root, and an account made only then with the uid the sandbox really runs as, read it
by the same path.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import ROOT

from qsandbox.common.paths import QISKIT_DIR, SANDBOX_UID, TOKEN_FILE
from qsandbox.launcher.checks.audit import release
from qsandbox.launcher.core.settings import LABEL, UNUSED_UID_BASE

pytestmark = [
    pytest.mark.changes_machine("adds host users and groups qsbx-u<uid> with chosen uids for the test's length"),
]
SCRIPT = ROOT / "tests" / "scripts" / "hold_then_exit.py"
SECRETS = (str(TOKEN_FILE), str(QISKIT_DIR / "qiskit-ibm.json"))  # the raw key, the account file


class Accounts:
    """Host accounts made for this test (user and group of one name, uid = gid), removed after."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def make(self, uid: int) -> str:
        for taken, lookup in (("uid", pwd.getpwuid), ("gid", grp.getgrgid)):
            try:
                lookup(uid)
                pytest.fail(f"{taken} {uid} is already this host's: the test needs it free")
            except KeyError:
                pass
        name = f"qsbx-u{uid}"
        subprocess.run(["groupadd", "-g", str(uid), name], check=True)
        self.made.append(name)
        # -l: no lastlog/faillog entry (a sparse file as large as the uid), -M: no home.
        subprocess.run(
            ["useradd", "-l", "-M", "-N", "-u", str(uid), "-g", str(uid), "-s", "/usr/sbin/nologin", name], check=True
        )
        return name

    def remove(self) -> None:
        for name in self.made:
            subprocess.run(["userdel", name], capture_output=True)
            subprocess.run(["groupdel", name], capture_output=True)
        left = [n for n in self.made if subprocess.run(["id", n], capture_output=True).returncode == 0]
        assert not left, f"accounts left behind: {left}"


@pytest.fixture
def accounts() -> Iterator[Accounts]:
    if os.geteuid() != 0 or not shutil.which("runuser"):
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: this test must run there")
        pytest.skip("needs root (useradd, runuser)")
    made = Accounts()
    try:
        yield made
    finally:
        made.remove()


def read_as(user: str | None, pid: int, path: str) -> subprocess.CompletedProcess[str]:
    """`cat /proc/PID/root/PATH` as `user` (None: root), the way another account on the host would."""
    argv = ["cat", f"/proc/{pid}/root{path}"]
    return subprocess.run(
        ["runuser", "-u", user, "--", *argv] if user else argv, capture_output=True, text=True, timeout=30
    )


def test_an_account_with_the_old_or_the_first_free_uid_cannot_read_roots_key(image, canary, docker_client, accounts):
    # Before the run: the uid root's sandbox used to get, and the one it gets on an empty host.
    others = [accounts.make(SANDBOX_UID), accounts.make(UNUSED_UID_BASE)]
    marker = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qsandbox", "run", "--token-stdin", str(SCRIPT), "0", marker],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        proc.stdin.write(canary + "\n")
        proc.stdin.close()
        proc.stdin = None
        line = proc.stdout.readline()
        assert line.strip() == "holding", line + proc.communicate(timeout=60)[1]
        (sandbox,) = [c for c in docker_client.containers.list(filters={"label": LABEL}) if marker in c.attrs["Args"]]
        user = sandbox.attrs["Config"]["User"]
        uid = int(user.split(":")[0])
        pids = [int(p[sandbox.top()["Titles"].index("PID")]) for p in sandbox.top()["Processes"]]
        assert len(pids) >= 2, pids  # docker-init, the entry point, the script

        for other in others:
            for path in SECRETS:
                for pid in pids:
                    got = read_as(other, pid, path)
                    assert got.returncode != 0 and canary not in got.stdout, f"{other} read {path} through {pid}"
                    assert "Permission denied" in got.stderr, (other, pid, path, got.stderr)

        # The control: root, and an account with the sandbox's own uid (made only now, so the run
        # could not avoid it), read the key by the same path through at least one process.
        assert user == f"{uid}:{uid}" and uid not in (0, SANDBOX_UID, UNUSED_UID_BASE), user
        holder = accounts.make(uid)
        for reader in (None, holder):
            for path in SECRETS:
                reads = [read_as(reader, pid, path) for pid in pids]
                assert any(canary in r.stdout for r in reads), (reader, path, [r.stderr for r in reads])
    finally:
        release(marker)
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "container and secret destroyed (engine confirms)" in err
