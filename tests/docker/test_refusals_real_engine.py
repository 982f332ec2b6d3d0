"""Refusals on the real engine: exit 2, one line with the remedy, and nothing left behind.

Also an ordinary user (made with useradd, outside the docker group) running qsandbox with the
rootful engine's socket present but closed to them: qsandbox says so, instead of "no engine".
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, error_lines, qsandbox

pytestmark = pytest.mark.docker

SCRIPT = ROOT / "tests" / "scripts" / "exit_with.py"
USER = "qsbx-nodocker"
MAKES_USER = pytest.mark.changes_machine(f"creates the OS user {USER} (kept)")  # `ordinary_user`
SOCKET = "/var/run/docker.sock"
DENIED = (
    f"the default socket {SOCKET} exists but this user may not use it (permission denied): run your own "
    'rootless engine (README: "Rootless Docker for each user") and point DOCKER_HOST or `docker context use` at it'
)

# The real CLI with one engine answer faked: the readback disagrees with what was asked for. The
# run id is fixed so that the engine's events for this run can be told from other runs' on the engine.
MISMATCH = """
import sys
from qsandbox.launcher import sandbox
real = sandbox.mismatches
sandbox.mismatches = lambda s, attrs: [*real(s, attrs), "pids limit: engine has 0, wanted 512 (faked by the test)"]
run_id = sys.argv.pop(1)
sandbox.new_run_id = lambda: run_id
from qsandbox.launcher.cli import main
main()
"""


def test_hardening_mismatch_destroys_the_sandbox_sends_no_key_and_exits_2(image, docker_client, canary):
    from qsandbox.launcher.settings import LABEL

    since = int(time.time()) - 1
    run_id = f"mismatch{secrets.token_hex(4)}"
    done = subprocess.run(
        [sys.executable, "-c", MISMATCH, run_id, "run", "--token-stdin", str(SCRIPT), "0"],
        input=canary + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert error_lines(done.stderr) == [
        "qsandbox: the engine did not apply the sandbox hardening, so no key was sent: "
        "pids limit: engine has 0, wanted 512 (faked by the test)"
    ], done.stderr
    # The sandbox really was created (so its readback was really checked) and destroyed, never started.
    this_run = {"type": "container", "label": f"{LABEL}={run_id}"}
    seen = docker_client.events(since=since, until=int(time.time()) + 1, filters=this_run, decode=True)
    # The sandbox's own events (the run's egress proxy, qsandbox-RUN-egress, starts meanwhile: it
    # never holds the key, and is removed with the run).
    actions = [e["Action"] for e in seen if e["Actor"]["Attributes"].get("name") == f"qsandbox-{run_id}"]
    assert "create" in actions and "destroy" in actions and "start" not in actions, actions
    assert docker_client.containers.list(all=True, filters={"label": this_run["label"]}) == []


def test_missing_image_is_refused_with_exit_2(docker_client, tmp_path, canary, monkeypatch):
    from qsandbox.common.errors import ImageMissing
    from qsandbox.launcher import sandbox
    from qsandbox.launcher.credentials import KeySource
    from qsandbox.launcher.run import run
    from qsandbox.launcher.settings import RunSettings

    def create_container(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a container was created although the image is missing")

    monkeypatch.setattr(sandbox, "create_container", create_container)  # other runs share the engine
    tag = f"qsandbox:missing-{secrets.token_hex(4)}"
    keyfile = tmp_path / "key"
    keyfile.write_text(canary + "\n")
    with pytest.raises(ImageMissing, match=f"image {tag} is not on this engine: run `qsandbox build`") as raised:
        run(RunSettings(script=SCRIPT, image=tag), KeySource(file=str(keyfile)))
    assert raised.value.exit_code == 2


def test_outdated_image_is_refused_with_exit_2(image, docker_client):
    from qsandbox.common.errors import ImageMissing
    from qsandbox.launcher import image as image_mod

    with pytest.raises(ImageMissing) as raised:
        image_mod.check(docker_client, tag="qsandbox:99.0.0")
    assert raised.value.exit_code == 2


# -- an ordinary user and the rootful engine's socket ----------------------------------------------


def as_user(*argv: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv as USER from /tmp, with a login-like environment: no DOCKER_HOST, no context."""
    env = [f"HOME=/home/{USER}", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]
    return subprocess.run(
        ["runuser", "-u", USER, "--", "env", "-i", *env, *argv],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/tmp",  # noqa: S108 - a directory every user may be in
    )


@pytest.fixture(scope="module")
def ordinary_user() -> str:
    if os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("needs root (useradd, runuser)")
    if not os.path.exists(SOCKET):
        pytest.skip(f"no rootful engine socket at {SOCKET}")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", USER], check=True)
    st = os.stat(SOCKET)
    members = grp.getgrgid(st.st_gid).gr_mem
    assert USER not in members and st.st_uid != pwd.getpwnam(USER).pw_uid and not st.st_mode & 0o007, (
        f"{USER} can reach {SOCKET}: the test needs a socket closed to it"
    )
    return USER


def _launcher_modules_bundle(where: Path) -> Path:
    """A venv on the system Python holding what the launcher imports plus this checkout's qsandbox.

    The project's .venv may sit on a Python under /root, which an ordinary user cannot execute.
    """
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, sysconfig\n"
            "import qsandbox.launcher.cli, qsandbox.launcher.doctor, qsandbox.launcher.run\n"
            "from qsandbox.launcher import engine\n"
            "try: engine.connect()\n"  # loads the SDK's lazily imported transport modules too
            "except Exception: pass\n"
            "site = sysconfig.get_paths()['purelib']\n"
            "print(site)\n"
            "for m in list(sys.modules.values()):\n"
            "    f = getattr(m, '__file__', None) or ''\n"
            "    if f.startswith(site + '/'): print(f[len(site) + 1:].split('/')[0])\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    site, tops = Path(listing[0]), sorted(set(listing[1:]) - {"qsandbox", "_distutils_hack"})
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    assert python, "no system python3 to make the user's venv with"
    venv = where / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    (target,) = venv.glob("lib/python3*/site-packages")
    for top in tops:
        src = site / top
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, target / top)
    shutil.copytree(ROOT / "src" / "qsandbox", target / "qsandbox", ignore=shutil.ignore_patterns("__pycache__"))
    launcher = venv / "bin" / "qsandbox"
    launcher.write_text(f"#!{venv}/bin/python3\nimport sys\nfrom qsandbox.launcher.cli import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    return launcher


@pytest.fixture(scope="module")
def user_qsandbox(ordinary_user) -> Iterator[str]:
    """`.venv/bin/qsandbox` if the user can run it; otherwise a copy of what it needs."""
    own = ROOT / ".venv" / "bin" / "qsandbox"
    if as_user(str(own), "--version").returncode == 0:
        yield str(own)
        return
    where = Path(tempfile.mkdtemp(prefix="qsbx-user-launcher-"))
    try:
        where.chmod(0o755)
        launcher = _launcher_modules_bundle(where)
        check = as_user(str(launcher), "--version")
        assert check.returncode == 0, check.stderr
        yield str(launcher)
    finally:
        shutil.rmtree(where)


@MAKES_USER
def test_doctor_names_the_socket_this_user_may_not_use(user_qsandbox):
    done = as_user(user_qsandbox, "doctor")
    assert done.stdout == f"FAIL engine: {DENIED}\n", done.stdout + done.stderr
    assert done.returncode == 1
    assert done.stderr == ""


@MAKES_USER
def test_run_names_the_socket_this_user_may_not_use(user_qsandbox, canary):
    done = as_user(user_qsandbox, "run", "--token-stdin", str(SCRIPT), "0", input=canary + "\n")
    assert done.stderr == f"qsandbox: {DENIED}\n"
    assert done.returncode == 125
    assert done.stdout == ""


@MAKES_USER
def test_no_engine_at_all_is_still_no_engine(user_qsandbox):
    """The control: a socket that does not exist is not a permission problem."""
    done = qsandbox("doctor", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert done.stdout.startswith("FAIL engine: no container engine answers at unix:///nonexistent/docker.sock")
    done = as_user("env", "DOCKER_HOST=unix:///tmp/nonexistent.sock", user_qsandbox, "doctor")
    assert done.stdout.startswith("FAIL engine: no container engine answers at unix:///tmp/nonexistent.sock: ")
    assert done.returncode == 1
