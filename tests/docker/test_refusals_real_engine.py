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
from helpers import ROOT, error_lines, qsandbox

SCRIPT = ROOT / "tests" / "scripts" / "exit_with.py"
USER = "qsbx-nodocker"
MAKES_USER = pytest.mark.changes_machine(f"creates the OS user {USER} (kept)")  # `ordinary_user`
SOCKET = "/var/run/docker.sock"
DENIED = (
    f"the default socket {SOCKET} exists but this user may not use it (permission denied): run your own "
    'rootless engine (README: "Rootless Docker for each user") and point DOCKER_HOST or `docker context use` at it'
)

# The real CLI behind a wrapping docker client: the SDK's create call for this run's sandbox (its
# name is fixed by the run id, so the engine's events for this run can be told from other runs')
# goes to the engine with one hardening field altered, as an engine or a plugin that ignores or
# rewrites an option would leave it. Nothing of qsandbox is patched: the engine really creates
# the container that way, and the launcher's readback must see it.
ALTERED_CREATE = """
import sys
import docker.api.container
from qsandbox.launcher.engine import sandbox
from qsandbox.launcher.core.settings import LABEL

field, run_id = sys.argv.pop(1), sys.argv.pop(1)
sandbox.new_run_id = lambda: run_id
real = docker.api.container.ContainerApiMixin.create_container

def alter(kw):
    host = kw["host_config"]
    if field == "user":
        kw["user"] = "4242:4242"
    elif field == "read-only root":
        host["ReadonlyRootfs"] = False
    elif field == "privileged":
        host["Privileged"] = True
    elif field == "dropped capabilities":
        host["CapDrop"] = ["NET_RAW"]
    elif field == "added capabilities":
        host["CapAdd"] = ["SYS_ADMIN"]
    elif field == "no-new-privileges":
        host["SecurityOpt"] = []
    elif field == "tmpfs mounts":
        host["Tmpfs"] = {**host["Tmpfs"], "/tmp": "rw,exec,size=1m,mode=1777"}
    elif field == "core ulimit":
        host["Ulimits"] = [{"Name": "core", "Soft": 1 << 20, "Hard": 1 << 20}]
    elif field == "log driver":
        host["LogConfig"] = {"Type": "json-file", "Config": {}}
    elif field == "auto-remove":
        host["AutoRemove"] = False
    elif field == "ipc mode":
        host["IpcMode"] = "shareable"
    elif field == "docker-init":
        host["Init"] = True
    elif field == "memory limit":
        host["Memory"] = host["Memory"] // 2
    elif field == "memory+swap limit":
        host["MemorySwap"] = host["Memory"] * 2
    elif field == "cpu limit":
        host["NanoCpus"] = 500_000_000
    elif field == "pids limit":
        host["PidsLimit"] = 100
    elif field == "mounts":
        host["Binds"] = ["/var/empty-qsandbox-test:/mnt:ro"]
    elif field == "network":  # the engine's default bridge: a way out the sandbox must not have
        host["NetworkMode"] = "bridge"
        kw.pop("networking_config", None)
    elif field == "label":
        kw["labels"] = {k: v for k, v in kw["labels"].items() if k != LABEL}
        kw["labels"]["qsandbox.test-run"] = run_id
    else:
        raise SystemExit(f"unknown field {field}")

def create_container(self, image, command=None, **kw):
    if kw.get("name") == f"qsandbox-{run_id}":
        alter(kw)
    return real(self, image, command, **kw)

docker.api.container.ContainerApiMixin.create_container = create_container
from qsandbox.launcher.cli.commands import main
main()
"""

# Each field the launcher reads back, and the start of the line its refusal names it with.
READ_BACK = {
    "user": "user: engine has '4242:4242'",
    "read-only root": "read-only root: engine has False",
    "privileged": "privileged: engine has True",
    "dropped capabilities": "dropped capabilities: engine has ['NET_RAW']",
    "added capabilities": "added capabilities: engine has ['SYS_ADMIN']",
    "no-new-privileges": "no-new-privileges: engine has False",
    "tmpfs mounts": "tmpfs mounts: engine has {",
    "core ulimit": "core ulimit: engine has (1048576, 1048576)",
    "log driver": "log driver: engine has 'json-file'",
    "auto-remove": "auto-remove: engine has False",
    "ipc mode": "ipc mode: engine has 'shareable'",
    "docker-init": "docker-init: engine has True",
    "memory limit": "memory limit: engine has ",
    "memory+swap limit": "memory+swap limit: engine has ",
    "cpu limit": "cpu limit: engine has 500000000",
    "pids limit": "pids limit: engine has 100",
    "mounts": "mounts: engine has {",
    "network": "network: engine has 'bridge'",
    "label": "run label missing",
}


@pytest.fixture(scope="module")
def empty_dir() -> Iterator[None]:
    Path("/var/empty-qsandbox-test").mkdir(exist_ok=True)
    yield
    Path("/var/empty-qsandbox-test").rmdir()


@pytest.mark.parametrize("field", list(READ_BACK))
def test_each_field_the_engine_applies_otherwise_is_refused_before_the_key(
    image, docker_client, canary, empty_dir, field
):
    """The run is refused with exit 2 and one line naming exactly that field; the sandbox was
    created (its readback was really made) and destroyed, never started: no key went in."""
    since = int(time.time()) - 1
    run_id = f"altered{secrets.token_hex(4)}"
    done = subprocess.run(
        [sys.executable, "-c", ALTERED_CREATE, field, run_id, "run", "--token-stdin", str(SCRIPT), "0"],
        input=canary + "\n",
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    (line,) = error_lines(done.stderr)
    prefix = "qsandbox: the engine did not apply the sandbox hardening, so no key was sent: "
    assert line.startswith(prefix + READ_BACK[field]), line
    assert ";" not in line.removeprefix(prefix), f"more than {field} differs: {line}"
    assert canary not in done.stderr
    # The engine's own record: created with the altered field, destroyed, never started.
    seen = docker_client.events(since=since, until=int(time.time()) + 1, filters={"type": "container"}, decode=True)
    actions = [e["Action"] for e in seen if e["Actor"]["Attributes"].get("name") == f"qsandbox-{run_id}"]
    assert "create" in actions and "destroy" in actions and "start" not in actions, actions
    assert docker_client.containers.list(all=True, filters={"name": f"qsandbox-{run_id}"}) == []


def test_missing_image_is_refused_with_exit_2(docker_client, tmp_path, canary, monkeypatch):
    from qsandbox.common.errors import ImageMissing
    from qsandbox.launcher.core.credentials import KeySource
    from qsandbox.launcher.core.settings import RunSettings
    from qsandbox.launcher.engine import sandbox
    from qsandbox.launcher.run.run import run

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
    from qsandbox.launcher.engine import image as image_mod

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
        cwd="/tmp",  # a directory every user may be in
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
            "import qsandbox.launcher.cli.commands, qsandbox.launcher.checks.doctor, qsandbox.launcher.run.run\n"
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
    entry = "from qsandbox.launcher.cli.commands import main"
    launcher.write_text(f"#!{venv}/bin/python3\nimport sys\n{entry}\nsys.exit(main())\n")
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
