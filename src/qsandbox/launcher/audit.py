"""`qsandbox audit`: send a canary key through real runs, then search every place it could leak.

The places are the rows of the secret-leak facts we design against: the engine's view of every
object (`docker inspect`, image history), the engine's data root (container directories, logs,
layers made during the audit), the host's temp directories and home, the working tree, the
launcher's argv and environment while it runs, and the run's own output (which is redacted).
Zero hits everywhere is the only pass.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker

from ..common.errors import QsandboxError, UsageError
from . import sandbox
from .settings import LABEL

# Exit paths a run can take. engine-restart runs a command the caller gives (it needs to know how
# its engine is managed, and it disturbs every other user of the engine), so it is opt-in.
EXIT_PATHS = ("success", "error", "timeout", "sigint", "sigterm", "sighup", "sigkill")
ENGINE_RESTART = "engine-restart"
# What the launcher must exit with on each path (SIGKILL: the signal itself); anything else means
# the path was not really taken, and its zero hits prove nothing.
EXPECTED_EXIT = {
    "success": 0,
    "error": 3,
    "timeout": 124,
    "sigint": 130,
    "sigterm": 143,
    "sighup": 129,
    "sigkill": -signal.SIGKILL,
    ENGINE_RESTART: 125,
}
_SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sighup": signal.SIGHUP, "sigkill": signal.SIGKILL}
_SKIP_DIRS = {".git", ".venv", "proc", "__pycache__", "node_modules"}
_LAYER_STORES = {"overlay2", "vfs", "fuse-overlayfs", "aufs"}

AUDIT_SCRIPT = """
import os, sys, time
from qiskit_ibm_runtime.accounts import AccountManager
key = AccountManager.get().token
print("key:", key, flush=True)                      # must come out redacted
open("/tmp/scratch.txt", "w").write(key)             # tmpfs: gone with the container
if sys.argv[1] == "error":
    raise SystemExit(3)
if sys.argv[1] != "success":
    print("sleeping", flush=True)
    time.sleep(600)
"""


def canary() -> str:
    """A random key-shaped value: 44 URL-safe characters."""
    alphabet = string.ascii_letters + string.digits + "_-"
    return "".join(secrets.choice(alphabet) for _ in range(44))


def encodings(value: str) -> list[bytes]:
    """Literal, URL-encoded, and base64 at each of its three alignments (edges trimmed)."""
    raw = value.encode()
    forms = {raw, urllib.parse.quote(value, safe="").encode()}
    for shift in range(3):
        forms.add(base64.b64encode(b"\0" * shift + raw)[4:-4])
    return sorted(forms)


@dataclass
class Place:
    name: str
    searched: int = 0  # files or objects looked at
    hits: list[str] = field(default_factory=list)


class LeakSearch:
    """Searches every place the canary might land, for everything written since it was created."""

    def __init__(self, client: docker.DockerClient, value: str, project: Path | None = None) -> None:
        self.client = client
        self.needles = encodings(value)
        self.since = time.time() - 1
        self.project = project or Path.cwd()

    def _grep(self, data: bytes) -> bool:
        return any(n in data for n in self.needles)

    def _files(self, place: Place, root: Path) -> None:
        if not root.exists():
            return
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
            for name in filenames:
                p = Path(dirpath, name)
                try:
                    st = p.lstat()
                    if not p.is_file() or st.st_mtime < self.since or st.st_size > 256 << 20:
                        continue
                    data = p.read_bytes()
                except OSError:
                    continue
                place.searched += 1
                if self._grep(data):
                    place.hits.append(str(p))

    def engine_objects(self) -> Place:
        place = Place("docker inspect (containers, networks, qsandbox images and their history)")
        api = self.client.api
        blobs: dict[str, str] = {}
        for c in api.containers(all=True):
            blobs[f"container {c['Id'][:12]}"] = repr(api.inspect_container(c["Id"]))
        for n in api.networks():
            blobs[f"network {n['Name']}"] = repr(api.inspect_network(n["Id"]))
        for i in api.images(name="qsandbox"):
            blobs[f"image {i['Id'][7:19]}"] = repr(api.inspect_image(i["Id"])) + repr(api.history(i["Id"]))
        place.searched = len(blobs)
        place.hits = [k for k, v in blobs.items() if self._grep(v.encode())]
        return place

    def data_root(self) -> Place:
        root = Path(self.client.info().get("DockerRootDir") or "/var/lib/docker")
        place = Place(f"engine data root {root} (container dirs, logs, new layers)")
        if not os.access(root, os.R_OK):
            place.name += " - not readable, not searched"
            return place
        for top in root.iterdir():
            if top.name in _LAYER_STORES:  # every image file lives here: only layers made since start
                for layer in top.iterdir():
                    if layer.stat().st_mtime >= self.since:
                        self._files(place, layer)
            else:
                self._files(place, top)
        return place

    def host_dirs(self) -> list[Place]:
        places = []
        temp_dirs = ("/tmp", "/var/tmp", "/dev/shm", "/var/log")  # noqa: S108 - searched, never written
        for d in (*map(Path, temp_dirs), Path.home(), self.project):
            place = Place(f"host {d}")
            self._files(place, d)
            places.append(place)
        return places

    def all(self) -> list[Place]:
        return [self.engine_objects(), self.data_root(), *self.host_dirs()]


def _launch(
    path: str, value: str, script: Path, restart_engine: str | None = None, run_options: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[bytes], Place]:
    """Run the audit script through the real launcher along one exit path."""
    argv = [sys.executable, "-m", "qsandbox", "run", "--token-stdin", *run_options]
    if path == "timeout":
        argv += ["--timeout", "3"]
    argv += [str(script), path]
    proc_place = Place("launcher argv and environment (/proc, while running)")
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin and p.stdout
    p.stdin.write(value.encode() + b"\n")
    p.stdin.close()
    p.stdin = None  # communicate() must not flush it again
    out = b""
    if path not in ("success", "error", "timeout"):
        while b"sleeping" not in out:
            line = p.stdout.readline()
            if not line:
                break
            out += line
    for part in ("cmdline", "environ"):
        try:
            data = Path(f"/proc/{p.pid}/{part}").read_bytes()
            proc_place.searched += 1
            if value.encode() in data:
                proc_place.hits.append(part)
        except OSError:
            pass
    if path in _SIGNALS:
        p.send_signal(_SIGNALS[path])
    if path == ENGINE_RESTART and restart_engine:
        restarted = subprocess.run(restart_engine, shell=True, capture_output=True, timeout=300)  # noqa: S602
        if restarted.returncode != 0:
            p.kill()
            p.communicate(timeout=120)
            raise QsandboxError(
                f"the engine restart command exited {restarted.returncode}: "
                f"{restarted.stderr.decode(errors='replace').strip()[-200:]}"
            )
    rest, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, p.returncode, out + rest, err), proc_place


def _wait_gone(client: docker.DockerClient, limit: float = 10.0) -> list[str]:
    end = time.monotonic() + limit
    while True:
        left = [
            c.name
            for c in client.containers.list(all=True, filters={"label": LABEL})
            if not sandbox.is_shared_platform(c.labels)
        ]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


@dataclass
class Outcome:
    hits: int = 0
    broken: list[str] = field(default_factory=list)  # paths not taken as asked: their search proves nothing


def audit(
    client: docker.DockerClient,
    paths: tuple[str, ...],
    say: Callable[[str], None],
    restart_engine: str | None = None,
    run_options: tuple[str, ...] = (),
) -> Outcome:
    """Run each exit path with a fresh canary and search everywhere.

    `restart_engine` is a shell command that restarts the engine; the engine-restart path runs it
    while the script sleeps holding the key. `run_options` go to every `qsandbox run`.
    """
    if ENGINE_RESTART in paths and not restart_engine:
        raise UsageError(
            "the engine-restart path needs --engine-restart COMMAND, the command that restarts "
            "your engine (e.g. 'systemctl restart docker')"
        )
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="qsandbox-audit-") as tmp:
        script = Path(tmp, "audit_script.py")
        script.write_text(AUDIT_SCRIPT)
        os.chmod(tmp, 0o755)  # noqa: S103 - the sandbox user must read it; it holds no secret
        os.chmod(script, 0o644)
        for path in paths:
            value = canary()
            search = LeakSearch(client, value)
            done, proc_place = _launch(path, value, script, restart_engine, run_options)
            output = Place("the run's stdout and stderr (redacted)", searched=1)
            if any(n in done.stdout + done.stderr for n in search.needles):
                output.hits.append("output")
            left = Place("labelled containers after the run", searched=1, hits=_wait_gone(client))
            places = [proc_place, output, left, *search.all()]
            hits = sum(len(p.hits) for p in places)
            outcome.hits += hits
            taken = done.returncode == EXPECTED_EXIT[path] and b"key: ***" in done.stdout
            if not taken:
                outcome.broken.append(path)
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                say(
                    f"exit path {path}: NOT TAKEN: launcher exit {done.returncode} (expected "
                    f"{EXPECTED_EXIT[path]}), key {'seen' if b'key: ***' in done.stdout else 'never seen'} "
                    f"by the script; {tail[0]}"
                )
            say(f"exit path {path}: launcher exit {done.returncode}, {hits} hit(s)")
            for p in places:
                detail = f" ({', '.join(p.hits[:3])})" if p.hits else ""
                say(f"  {len(p.hits)} hit(s) in {p.name}: {p.searched} searched{detail}")
    return outcome
