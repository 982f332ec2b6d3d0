"""Two OS users on one machine, each with their own rootless Podman, run overlapping sandboxes:
neither can see the other's key, by any means an ordinary user has. On a shared rootful engine the
opposite holds, and the last test shows it: whoever reaches the engine reads a running key.

scripts/podman-users.sh makes the users (qsbx-alice, qsbx-bob), their Podman API services and
images, and a venv at /opt/qsandbox-users they run qsandbox from. Needs root; CI runs it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from helpers import ROOT, problems

from qsandbox.launcher.checks.audit import LeakSearch

# The users must be able to read the scripts wherever the checkout lives (CI's may be under /root):
# the fixture copies them to a world-readable directory.
SHARED = Path("/var/tmp/qsandbox-users-tests")
HOSTILE = SCRIPTS = SHARED
TEST_FILES = [
    ROOT / "tests" / "scripts" / "sleep_forever.py",
    ROOT / "tests" / "hostile" / "find_other_key.py",
    ROOT / "tests" / "hostile" / "other_user_search.py",
    ROOT / "tests" / "scripts" / "write_output.py",
]
USERS_VENV = Path("/opt/qsandbox-users/bin")

# The tests that use the fixture `users`.
MAKES_USERS = pytest.mark.changes_machine(
    "runs scripts/podman-users.sh: installs podman, uidmap, slirp4netns, fuse-overlayfs and catatonit, creates "
    "the users qsbx-alice and qsbx-bob with subordinate id ranges and leaves their rootless Podman services "
    "running, makes /dev/net/tun mode 0666, installs a venv at /opt/qsandbox-users"
)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    docker_host: str

    def argv(self, *args: str) -> list[str]:
        """Run a command as this user, with their engine, as their login shell would."""
        return [
            "runuser",
            "-u",
            self.name,
            "--",
            "env",
            f"HOME=/home/{self.name}",
            f"XDG_RUNTIME_DIR=/run/user/{self.uid}",
            f"DOCKER_HOST={self.docker_host}",
            *args,
        ]

    def start_run(self, key: str, script: Path, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            self.argv(str(USERS_VENV / "qsandbox"), "run", "--allow-no-limits", "--token-stdin", str(script), *args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert p.stdin is not None
        p.stdin.write(key + "\n")
        p.stdin.close()
        p.stdin = None  # communicate() must not flush it again
        return p

    def search(self, key: str, since: float) -> str:
        """other_user_search.py as this user, on the host; the key goes in as its SHA-256 only."""
        done = subprocess.run(
            self.argv(str(USERS_VENV / "python"), str(HOSTILE / "other_user_search.py"), _sha(key), str(since)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def users(image) -> list[User]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: these tests must run there")
        pytest.skip("needs root (creates OS users)")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "podman-users.sh")], capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shutil.rmtree(SHARED, ignore_errors=True)
    SHARED.mkdir(mode=0o755)
    for f in TEST_FILES:
        shutil.copy(f, SHARED / f.name)
        (SHARED / f.name).chmod(0o644)
    found = [User(n, int(u), h) for n, u, h in (line.split() for line in done.stdout.splitlines())]
    assert len(found) == 2
    return found


@MAKES_USERS
def test_two_users_with_rootless_podman_cannot_see_each_others_key(users, docker_client):
    alice, bob = users
    keys = {alice.name: secrets.token_urlsafe(33), bob.name: secrets.token_urlsafe(33)}
    began = time.time() - 1
    # The search of each key runs where that key went: its user's own Podman (its objects, its
    # storage as the data root, /run/user/UID), with its controls planted there too.
    search = {
        u.name: LeakSearch(
            docker.DockerClient(base_url=u.docker_host), keys[u.name], project=Path("/home"), docker_host=u.docker_host
        )
        for u in users
    }
    runs = {u.name: u.start_run(keys[u.name], SCRIPTS / "sleep_forever.py") for u in users}
    try:
        for p in runs.values():  # both sandboxes now hold their keys at the same time
            assert p.stdout.readline().strip() == "sleeping", p.stderr.read() if p.poll() is not None else ""

        for me, other in ((alice, bob), (bob, alice)):
            seen = me.search(keys[other.name], began)
            assert "key found: False" in seen, seen
            # ... by a search that found its own control, planted in the same call (a file, a process).
            assert seen.rstrip().endswith("control found: file True, process True"), seen
            assert "(1 reachable)" in seen, seen  # only their own engine answers them
            assert int(seen.split()[2]) > 100, seen  # it did look
            # A third sandbox, inside: the other's key is not there either.
            inside = subprocess.run(
                me.argv(
                    str(USERS_VENV / "qsandbox"),
                    "run",
                    "--allow-no-limits",
                    "--token-stdin",
                    str(HOSTILE / "find_other_key.py"),
                    _sha(keys[other.name]),
                ),
                input=secrets.token_urlsafe(33) + "\n",
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert inside.returncode == 0, inside.stderr
            assert "other key found: False" in inside.stdout

        # The search can fail: the key's owner finds it (through her engine, or in /proc: with
        # keep-id the sandbox runs as her own uid, inside a user namespace she owns).
        mine = alice.search(keys[alice.name], began)
        assert "key found: True" in mine, mine
    finally:
        for p in runs.values():  # to the launcher itself: runuser would SIGKILL it 2 s after SIGTERM
            launcher = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
            os.kill(int(launcher[0]), signal.SIGTERM) if launcher else p.terminate()
        ended = {name: p.communicate(timeout=120) for name, p in runs.items()}
    for name, p in runs.items():
        err = ended[name][1]
        assert p.returncode == 143, err
        closing = err.rstrip().splitlines()[-1]  # the closing line, whatever the relay adds to it
        assert "container and secret destroyed (engine confirms)" in closing, err
    for name, s in search.items():
        places = s.all()
        # A place not searched, or searched without finding its own control, is a failure too.
        assert problems(places) == [], f"{name}'s key: {problems(places)}"
        searched = {p.name for p in places if not p.skipped}
        assert any(n.startswith(f"engine data root /home/{name}/") for n in searched), searched  # her storage
        assert any(n.startswith("engine runtime state /run/user/") for n in searched), searched


def test_on_a_shared_rootful_engine_whoever_reaches_it_reads_a_running_key(image, canary):
    """What the README says of the docker group, shown: the same search, as root, on dockerd."""
    began = time.time() - 1
    p = subprocess.Popen(
        [sys.executable, "-m", "qsandbox", "run", "--token-stdin", str(TEST_FILES[0])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    p.stdin.write(canary + "\n")
    p.stdin.close()
    p.stdin = None
    try:
        assert p.stdout.readline().strip() == "sleeping"
        seen = subprocess.run(
            [sys.executable, str(TEST_FILES[2]), _sha(canary), str(began)], capture_output=True, text=True, timeout=300
        )
        # Through the engine's API alone: all a docker-group member needs.
        assert "through engines: ['/var/run/docker.sock: qsandbox-" in seen.stdout, seen.stdout + seen.stderr
    finally:
        p.terminate()
        p.communicate(timeout=120)


@MAKES_USERS
def test_rootless_podman_doctor_limits_refusal_and_output(users):
    """One user's own engine: doctor is green, a run without limits is refused unless allowed,
    and --output stays the user's (keep-id)."""
    alice = users[0]
    doctor = subprocess.run(
        alice.argv(str(USERS_VENV / "qsandbox"), "doctor"), capture_output=True, text=True, timeout=120
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "ok   engine: rootless Podman" in doctor.stdout
    assert "ok   engine access: rootless Podman: only you can reach it" in doctor.stdout
    for check in (
        f"non-root: uid {alice.uid}",
        "capabilities: effective 0x0, bounding 0x0",
        "no core dumps",
        "key tmpfs",
        "account tmpfs",
        "read-only root",
        "no-new-privileges",
    ):
        assert f"ok   {check}" in doctor.stdout, doctor.stdout
    cgroup_v1 = "cannot apply memory" in doctor.stdout

    out = Path(f"/home/{alice.name}/out-{secrets.token_hex(4)}")
    subprocess.run(alice.argv("mkdir", str(out)), check=True)
    try:
        argv = [
            str(USERS_VENV / "qsandbox"),
            "run",
            "--token-stdin",
            "--output",
            str(out),
            str(SHARED / "write_output.py"),
        ]
        refused = subprocess.run(
            alice.argv(*argv), input=secrets.token_urlsafe(33) + "\n", capture_output=True, text=True, timeout=120
        )
        if cgroup_v1:
            assert refused.returncode == 2, refused.stderr
            assert "re-run with --allow-no-limits" in refused.stderr and not list(out.iterdir())
        done = subprocess.run(
            alice.argv(*argv[:2], "--allow-no-limits", *argv[2:]),
            input=secrets.token_urlsafe(33) + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        written = list(out.iterdir())
        assert written and all(f.stat().st_uid == alice.uid for f in written), [(f, f.stat().st_uid) for f in written]
    finally:
        shutil.rmtree(out, ignore_errors=True)


@MAKES_USERS
def test_audit_on_rootless_podman_and_a_path_not_taken_fails_it(users):
    """The audit on a user's own engine finds nothing; a path that never ran cannot pass it."""
    bob = users[1]
    audit = [str(USERS_VENV / "qsandbox"), "audit"]
    # What an ordinary user cannot read: other users' processes and temp dirs, the rootful engine's
    # runtime state, root-only logs, and the layers in his own storage that belong to subuids
    # (those need `podman unshare`). Accepted by name; everything else must be searched.
    unreadable = ["processes", "launcher", "data-root", "engine-run", "host-tmp", "host-var-log", "host-home"]
    accept = [arg for place in unreadable for arg in ("--allow-unsearched", place)]
    # From a directory of his own: the project tree's control is planted in the working directory.
    workdir = SHARED / f"audit-{bob.name}"
    workdir.mkdir(exist_ok=True)
    os.chown(workdir, bob.uid, bob.uid)
    done = subprocess.run(
        bob.argv(*audit, "--allow-no-limits", *accept, "--path", "success", "--path", "sigkill"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exit path sigkill: launcher exit -9, 0 hit(s)" in done.stdout
    assert f"engine data root /home/{bob.name}/" in done.stdout  # his own storage, as far as he can read it
    assert "0 hit(s) in the live sandbox" in done.stdout
    assert done.stderr.strip().endswith("qsandbox: audit found 0 hit(s)")
    info = subprocess.run(
        bob.argv(str(USERS_VENV / "python"), "-c", "import docker; print(docker.from_env().info()['CgroupVersion'])"),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    if info == "1":  # without the flag nothing can start here: the audit must not call that a pass
        done = subprocess.run(bob.argv(*audit, "--path", "success"), capture_output=True, text=True, timeout=300)
        # Not a pass twice over: the path was not taken, and a run that never started left places
        # unsearched (125, NOT A PASS) rather than merely failed (1).
        assert done.returncode == 125, done.stdout + done.stderr
        assert "exit path success: NOT TAKEN: launcher exit 2 (expected 0), key never seen" in done.stdout
        assert "exit path(s) not taken: success; NOT A PASS" in done.stderr
