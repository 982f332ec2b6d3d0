"""`qsandbox audit`: send a canary key through real runs, then search every place it could leak.

The places are the rows of the secret-leak facts we design against. While the run holds the key:
the live sandbox as the engine describes it (inspect, processes, filesystem diff), every other
container, the engine's events so far, and every host process's argv and environment (the
launcher's above all). After the run: the engine's view of every object (`docker inspect`, image
history), the engine's data root (container directories, logs, every layer), the engine's runtime
state (`/run/docker`, `/run/containerd`, `/var/lib/containerd`), the journal, the host's temp
directories and home, the working tree, and the run's own output (which is redacted).

Every form of the key is searched for: literal, URL-encoded, and base64 and base64url at each of
base64's three alignments. A file is read when its content or metadata changed since the search
began (mtime or ctime: a copy that keeps its old mtime still gets a new ctime); unchanged files
are counted, not read. Files are read whole, in chunks.

A place is searched, skipped (it does not exist here, with the reason), or NOT SEARCHED (it, or
something in it that may have changed during the run, could not be read). Zero hits counts only
for places searched: a place not searched fails the audit unless the caller accepted it by name.
"""

from __future__ import annotations

import base64
import errno
import os
import secrets
import signal
import stat
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from ..common.errors import QsandboxError, UsageError
from . import localplatform, sandbox
from .settings import IMAGE_REPOSITORY, LABEL, VENV_PYTHON

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
TIMEOUT_SECONDS = 10  # the timeout path: long enough to inspect the live sandbox before it fires
# Filesystems with nothing a key could be written into; a mount of one inside a place is left out.
_PSEUDO_FS = {
    "proc", "sysfs", "nsfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs",
    "securityfs", "bpf", "fusectl", "configfs", "pstore", "autofs", "binfmt_misc", "hugetlbfs",
}  # fmt: skip
_CHUNK = 1 << 20

# Place keys: the names an `allow_unsearched` caller uses to accept a place it knows it cannot read.
PLACE_KEYS = (
    "live-container", "live-engine", "engine-events", "processes", "launcher", "engine-objects",
    "data-root", "engine-run", "journal", "host-tmp", "host-var-tmp", "host-dev-shm", "host-var-log",
    "host-home", "project", "output", "leftovers",
)  # fmt: skip

AUDIT_SCRIPT = """
import os, sys, time
from qiskit_ibm_runtime.accounts import AccountManager
key = AccountManager.get().token
print("key:", key, flush=True)                      # must come out redacted
open("/tmp/scratch.txt", "w").write(key)             # tmpfs: gone with the container
if sys.argv[1] in ("success", "error"):
    print("holding", flush=True)                     # the audit inspects the live sandbox now
    go = "/tmp/go-" + sys.argv[2]                    # made by release() through the engine
    end = time.monotonic() + 120
    while not os.path.exists(go) and time.monotonic() < end:
        time.sleep(0.05)
    raise SystemExit(3 if sys.argv[1] == "error" else 0)
print("sleeping", flush=True)
time.sleep(600)
"""


def release(nonce: str) -> None:
    """Let a holding script go on: make /tmp/go-NONCE in the one sandbox that got NONCE as an
    argument, through the engine (nothing of the host is mounted into a sandbox)."""
    client = docker.from_env()
    for container in [c for c in client.containers.list(filters={"label": LABEL}) if nonce in c.attrs["Args"]]:
        container.exec_run([VENV_PYTHON, "-c", f"open('/tmp/go-{nonce}', 'w').close()"])
    # None running: the run never started (refused), and its path is reported as not taken.


def canary() -> str:
    """A random key-shaped value: 44 URL-safe characters."""
    alphabet = string.ascii_letters + string.digits + "_-"
    return "".join(secrets.choice(alphabet) for _ in range(44))


def encodings(value: str) -> list[bytes]:
    """Literal, URL-encoded, and base64 and base64url at each of base64's three alignments.

    For base64 only the middle is kept, the part that does not depend on neighbouring bytes.
    """
    raw = value.encode()
    forms = {raw, urllib.parse.quote(value, safe="").encode()}
    for shift in range(3):
        inner = base64.b64encode(b"\0" * shift + raw)[4:-4]
        forms.add(inner)
        forms.add(inner.replace(b"+", b"-").replace(b"/", b"_"))
    return sorted(forms)


def planted_forms(value: str) -> dict[str, bytes]:
    """Each form of `value` as a writer would really produce it, inside neighbouring bytes.

    For positive controls: a search that cannot find these cannot find a leak either.
    """
    raw = value.encode()
    found = {
        "literal": b"key=" + raw + b";",
        "url-encoded": b"token=" + urllib.parse.quote(value, safe="").encode() + b"&x=1",
    }
    for shift in range(3):
        wrapped = b"p" * shift + raw + b"\n"
        found[f"base64+{shift}"] = b"b64:" + base64.b64encode(wrapped) + b"\n"
        found[f"base64url+{shift}"] = b"b64u:" + base64.urlsafe_b64encode(wrapped) + b"\n"
    return found


@dataclass
class Place:
    name: str
    key: str = ""  # the short name by which a caller may accept it as not searched
    searched: int = 0  # files, objects or processes looked at
    hits: list[str] = field(default_factory=list)
    skipped: str = ""  # not there to search, and why (not a failure)
    unreadable: list[str] = field(default_factory=list)  # could not be read: the place is NOT searched
    left_out: Counter[str] = field(default_factory=Counter)  # left out by design, by reason

    @property
    def failed(self) -> bool:
        """Not searched (wholly or in part): its zero hits prove nothing."""
        return bool(self.unreadable)

    def line(self) -> str:
        """One line of audit output; a place not searched never reads as '0 hit(s)'."""
        if self.skipped:
            return f"skipped {self.name}: {self.skipped}"
        detail = f" ({', '.join(self.hits[:3])})" if self.hits else ""
        left = "; left out: " + ", ".join(f"{n} {why}" for why, n in sorted(self.left_out.items()))
        left = left if self.left_out else ""
        if self.failed:
            shown = ", ".join(self.unreadable[:3]) + (
                f" and {len(self.unreadable) - 3} more" if len(self.unreadable) > 3 else ""
            )
            return (
                f"NOT SEARCHED {self.name}: could not read {shown}; "
                f"{len(self.hits)} hit(s) in the {self.searched} searched{detail}{left}"
                + (f" [--allow-unsearched {self.key}]" if self.key else "")
            )
        return f"{len(self.hits)} hit(s) in {self.name}: {self.searched} searched{detail}{left}"


def _mount_types() -> dict[str, str]:
    """Mount point -> filesystem type, from this process's mount table."""
    found: dict[str, str] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        parts = left.split()
        if len(parts) > 4 and right:
            found[parts[4].encode().decode("unicode_escape")] = right.split()[0]
    return found


def _process_age(pid: int, since: float) -> str | None:
    """'kernel thread(s)' or 'process(es) older than the search' when `pid` is one, else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (OSError, StopIteration, IndexError):
        return None
    if int(fields[6]) & 0x00200000:  # PF_KTHREAD
        return "kernel thread(s)"
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return "process(es) older than the search" if started < since - 1 else None


def _changed(st: os.stat_result, since: float) -> bool:
    return max(st.st_mtime, st.st_ctime) >= since


class LeakSearch:
    """Searches every place the canary might land, for everything written since it was created."""

    def __init__(self, client: docker.DockerClient, value: str, project: Path | None = None) -> None:
        self.client = client
        self.needles = encodings(value)
        self._overlap = max(len(n) for n in self.needles)
        self.since = time.time() - 1
        self.project = project or Path.cwd()
        self.run_ids: list[str] = []  # of the live sandboxes found (live_container)

    # -- matching --------------------------------------------------------------------------------

    def _grep(self, data: bytes) -> bool:
        return any(n in data for n in self.needles)

    def _grep_stream(self, f: Any) -> bool:
        tail = b""
        while chunk := f.read(_CHUNK):
            data = tail + chunk
            if self._grep(data):
                return True
            tail = data[-self._overlap :]
        return False

    def _json_hits(self, obj: Any, where: str) -> list[str]:
        """Paths (like `Config.Env[2]`) of every string in `obj` holding a form of the key."""
        if isinstance(obj, dict):
            hits = []
            for k, v in obj.items():
                hits += self._json_hits(k, f"{where}.{k} (the name)") + self._json_hits(v, f"{where}.{k}")
            return hits
        if isinstance(obj, list | tuple):
            return [h for i, v in enumerate(obj) for h in self._json_hits(v, f"{where}[{i}]")]
        if obj is None or isinstance(obj, bool | int | float):
            return []
        data = obj if isinstance(obj, bytes) else str(obj).encode()
        return [where.lstrip(".")] if self._grep(data) else []

    # -- files -------------------------------------------------------------------------------------

    def _files(
        self,
        place: Place,
        root: Path,
        skip_dirs: Iterable[str] = (),
        mounts: dict[str, str] | None = None,
        changed_only: bool = True,
    ) -> None:
        """Search every regular file under `root` changed since the search began.

        Unchanged files are counted as left out. A directory that cannot be listed, or a changed
        file that cannot be read, makes the place NOT SEARCHED. Mounts of pseudo filesystems, and
        a running container's merged overlay view (made of layers searched on their own), are left
        out and counted.
        """
        mounts = _mount_types() if mounts is None else mounts
        skip = set(skip_dirs)
        stack = [root]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue  # removed while we walked (a container going away)
            except OSError as e:
                place.unreadable.append(f"{d}/ ({e.strerror})")
                continue
            for entry in entries:
                path = entry.path
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    place.unreadable.append(f"{path} ({e.strerror})")
                    continue
                fstype = mounts.get(path)
                if fstype in _PSEUDO_FS:
                    place.left_out[f"{fstype} mount(s)"] += 1
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if entry.name in skip:
                        place.left_out[f"{entry.name} dir(s)"] += 1
                    elif fstype == "overlay" and entry.name == "merged":
                        place.left_out["running containers' merged views (their layers are searched)"] += 1
                    else:
                        stack.append(Path(path))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue  # symlinks, sockets, FIFOs, devices: no content of their own
                if changed_only and not _changed(st, self.since):
                    place.left_out["file(s) unchanged since the search began"] += 1
                    continue
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    with os.fdopen(fd, "rb") as f:
                        hit = self._grep_stream(f)
                    if not hit and "/.git/objects/" in path and len(entry.name) == 38:
                        hit = self._grep(zlib.decompress(Path(path).read_bytes()))  # a loose git object
                except FileNotFoundError:
                    continue
                except zlib.error:
                    hit = False
                except OSError as e:
                    place.unreadable.append(f"{path} ({e.strerror})")
                    continue
                place.searched += 1
                if hit:
                    place.hits.append(path)

    def _tree(self, name: str, key: str, root: Path, skip_dirs: Iterable[str] = (), **kw: Any) -> Place:
        place = Place(f"{name} {root}", key)
        try:
            st = root.stat()
        except FileNotFoundError:
            place.skipped = "not present on this host"
            return place
        except OSError as e:
            place.unreadable.append(f"{root} ({e.strerror})")
            return place
        if not stat.S_ISDIR(st.st_mode):
            place.skipped = "not a directory"
            return place
        self._files(place, root, skip_dirs, **kw)
        return place

    # -- after the run -----------------------------------------------------------------------------

    def engine_objects(self) -> Place:
        place = Place(
            "docker inspect (containers, networks, volumes, qsandbox images and their history)", "engine-objects"
        )
        api = self.client.api
        blobs: dict[str, Any] = {}
        try:
            for c in api.containers(all=True):
                try:
                    blobs[f"container {c['Id'][:12]}"] = api.inspect_container(c["Id"])
                except docker.errors.NotFound:
                    continue  # removed between the listing and the inspect
            for n in api.networks():
                try:
                    blobs[f"network {n['Name']}"] = api.inspect_network(n["Id"])
                except docker.errors.NotFound:
                    continue
            for v in (api.volumes() or {}).get("Volumes") or []:
                blobs[f"volume {v['Name']}"] = v
            for i in api.images(name=IMAGE_REPOSITORY):
                blobs[f"image {i['Id'][7:19]}"] = [api.inspect_image(i["Id"]), api.history(i["Id"])]  # type: ignore[no-untyped-call]
        except docker.errors.DockerException as e:
            place.unreadable.append(f"the engine's API ({e})")
        place.searched = len(blobs)
        place.hits = [f"{k} {h}" for k, v in blobs.items() for h in self._json_hits(v, "")]
        return place

    def data_root(self) -> Place:
        """Everything in the engine's data root that changed: containers, logs, every layer.

        Whole layers are walked, not only layers made during the run: a write deep inside an
        existing layer leaves its top directory's times alone.
        """
        try:
            root = Path(self.client.info().get("DockerRootDir") or "/var/lib/docker")
        except docker.errors.DockerException as e:
            return Place("engine data root", "data-root", unreadable=[f"the engine's info ({e})"])
        place = self._tree("engine data root", "data-root", root)
        place.name += " (container dirs, logs, layers)"
        if place.skipped:  # the engine says its data lives there: absent is not "nothing to find"
            place.unreadable.append(f"{root} ({place.skipped})")
            place.skipped = ""
        return place

    def engine_runtime(self) -> list[Place]:
        """The engine's and containerd's state outside the data root, when present."""
        return [
            self._tree("engine runtime state", "engine-run", Path(d), changed_only=False)
            for d in ("/run/docker", "/run/containerd", "/var/lib/containerd")
        ]

    def journal(self) -> Place:
        place = Place("the systemd journal since the search began", "journal")
        if not Path("/run/systemd/journal/socket").exists():
            place.skipped = "no journald running here (/run/systemd/journal/socket absent)"
            return place
        argv = ["journalctl", "--no-pager", "-q", "-o", "export", f"--since=@{int(self.since)}"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            place.unreadable.append(f"journalctl ({e})")
            return place
        if done.returncode != 0:
            place.unreadable.append(
                f"journalctl (exit {done.returncode}: {done.stderr.decode(errors='replace')[:200]})"
            )
            return place
        place.searched = done.stdout.count(b"\n__CURSOR=") + done.stdout.startswith(b"__CURSOR=")
        if self._grep(done.stdout):
            place.hits.append("journal entries")
        return place

    def host_dirs(self) -> list[Place]:
        places = []
        keys = {"/tmp": "host-tmp", "/var/tmp": "host-var-tmp", "/dev/shm": "host-dev-shm", "/var/log": "host-var-log"}  # noqa: S108
        mounts = _mount_types()
        for d, key in keys.items():
            places.append(self._tree("host", key, Path(d), mounts=mounts))
        places.append(self._tree("host home", "host-home", Path.home(), mounts=mounts))
        places.append(self._tree("project tree", "project", self.project, mounts=mounts))
        return places

    def all(self) -> list[Place]:
        """Every place to search after a run."""
        return [self.engine_objects(), self.data_root(), *self.engine_runtime(), self.journal(), *self.host_dirs()]

    # -- while the run holds the key -------------------------------------------------------------

    def live_container(self, marker: str) -> Place:
        """The running sandbox whose command holds `marker`, as the engine describes it.

        Inspect (Config.Env, Cmd, Entrypoint, Labels, Name, HostConfig, Mounts, everything), its
        processes (`top`) and its filesystem changes (`diff`). Not found running: NOT SEARCHED.
        """
        place = Place("the live sandbox (inspect, top, diff)", "live-container")
        api = self.client.api
        try:
            found = [c for c in api.containers(filters={"label": LABEL}) if marker in (c.get("Command") or "")]
            for c in found:
                attrs = api.inspect_container(c["Id"])
                self.run_ids.append(str((attrs["Config"].get("Labels") or {}).get(LABEL)))
                place.searched += 1
                place.hits += [f"container {c['Id'][:12]} {h}" for h in self._json_hits(attrs, "")]
                # ps cuts each command line to its terminal width unless told not to (-ww).
                top = lambda cid: api.top(cid, ps_args="-ef -ww")  # noqa: E731 - a one-line adapter
                for what, call in (("top", top), ("diff", api.diff)):
                    try:
                        data = call(c["Id"])
                    except (docker.errors.APIError, ValueError):
                        # Rootless Podman on cgroup v1 answers `top` with no JSON. The processes
                        # are still searched from the host (argv, environment): said, not hidden.
                        place.left_out[f"{what} (the engine could not give it)"] += 1
                        continue
                    place.hits += [f"container {c['Id'][:12]} {what}.{h}" for h in self._json_hits(data, "")]
        except docker.errors.DockerException as e:
            place.unreadable.append(f"the engine's API ({e})")
            return place
        if not found:
            place.unreadable.append(f"the run's container (none running with {marker!r} in its command)")
        return place

    def engine_events(self) -> Place:
        """Every event the engine reported since the search began (labels, names, images, exit codes)."""
        place = Place("the engine's events since the search began", "engine-events")
        try:
            window = {"since": f"{self.since:.9f}", "until": f"{time.time():.9f}"}  # to the nanosecond
            for event in self.client.api.events(decode=True, **window):  # type: ignore[call-overload]
                place.searched += 1
                place.hits += [
                    f"event {event.get('Type')} {event.get('Action')} {h}" for h in self._json_hits(event, "")
                ]
        except docker.errors.DockerException as e:
            place.unreadable.append(f"the engine's event stream ({e})")
        return place

    def processes(self, pids: Iterable[int] | None = None, name: str = "", key: str = "processes") -> Place:
        """The argv and environment of the given processes, or of every process on the host.

        A named process that cannot be read (gone, or not ours to read) makes the place NOT
        SEARCHED. In the sweep of every process, one that exits mid-sweep is passed over, and so
        are kernel threads and processes started before the search began that cannot be read (they
        were given their argv and environment before the key existed); any other unreadable one
        makes the place NOT SEARCHED.
        """
        named = pids is not None
        place = Place(name or "every host process's argv and environment (/proc)", key)
        if pids is None:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        for pid in pids:
            for part in ("cmdline", "environ"):
                try:
                    data = Path(f"/proc/{pid}/{part}").read_bytes()
                except OSError as e:
                    if not named and e.errno in (errno.ENOENT, errno.ESRCH):
                        continue
                    old = None if named else _process_age(pid, self.since)
                    if old:
                        place.left_out[f"unreadable {old}"] += 1
                        continue
                    place.unreadable.append(f"/proc/{pid}/{part} ({e.strerror})")
                    continue
                place.searched += 1
                if self._grep(data):
                    place.hits.append(f"/proc/{pid}/{part}")
        return place

    def live(self, marker: str, launcher: int | None = None) -> list[Place]:
        """Every place to search while the run holds the key."""
        places = [self.live_container(marker), self.engine_objects(), self.engine_events(), self.processes()]
        places[1].name = "docker inspect, live (every container, network, volume, qsandbox image)"
        places[1].key = "live-engine"
        if launcher is not None:
            places.append(self.processes([launcher], "the launcher's argv and environment (/proc)", "launcher"))
        return places


def not_searched(places: Iterable[Place], accepted: Iterable[str] = ()) -> list[str]:
    """Names of the places that failed to be searched and were not accepted by key."""
    ok = set(accepted)
    return [p.key or p.name for p in places if p.failed and p.key not in ok]


def _launch(
    path: str,
    value: str,
    script: Path,
    search: LeakSearch,
    restart_engine: str | None = None,
    run_options: tuple[str, ...] = (),
) -> tuple[subprocess.CompletedProcess[bytes], list[Place]]:
    """Run the audit script through the real launcher along one exit path; search it live."""
    nonce = secrets.token_hex(8)
    argv = [sys.executable, "-m", "qsandbox", "run", "--token-stdin", *run_options]
    if path == "timeout":
        argv += ["--timeout", str(TIMEOUT_SECONDS)]
    argv += [str(script), path, nonce]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin and p.stdout
    p.stdin.write(value.encode() + b"\n")
    p.stdin.close()
    p.stdin = None  # communicate() must not flush it again
    out = b""
    while b"sleeping" not in out and b"holding" not in out:
        line = p.stdout.readline()
        if not line:
            break
        out += line
    live = search.live(nonce, launcher=p.pid)
    if path in ("success", "error"):
        release(nonce)
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
    rest, err = p.communicate(timeout=180)
    return subprocess.CompletedProcess(argv, p.returncode, out + rest, err), live


def _wait_gone(client: docker.DockerClient, run_ids: list[str], limit: float = 10.0) -> Place:
    """The run's own labelled objects (containers, networks) left after it, waited for a while.

    Only this run's: other runs may share the engine. A run whose id was never seen (its sandbox
    was not found running) cannot be checked: NOT SEARCHED.
    """
    place = Place("the run's labelled objects after it (containers, networks)", "leftovers")
    if not run_ids:
        place.unreadable.append("the run's id (its sandbox was never seen running)")
        return place
    end = time.monotonic() + limit
    while True:
        left = [name for run_id in run_ids for name in sandbox.leftovers(client, run_id)]
        # A SIGKILLed launcher cannot remove its run's network; once empty it holds nothing of
        # the key, and the next run (or `qsandbox sweep`) removes it: said, not a hit.
        empty = [n for n in left if n.startswith("network ") and not _has_containers(client, n[len("network ") :])]
        left = [n for n in left if n not in empty]
        if not left or time.monotonic() > end:
            place.searched, place.hits = len(run_ids), left
            if empty:
                place.left_out["empty network(s) a killed launcher left, removed now"] = len(empty)
                for n in empty:
                    localplatform.remove_network(client, n[len("network ") :])
            return place
        time.sleep(0.1)


def _has_containers(client: docker.DockerClient, network: str) -> bool:
    try:
        return bool(client.api.inspect_network(network).get("Containers"))
    except docker.errors.NotFound:
        return False


@dataclass
class Outcome:
    hits: int = 0
    broken: list[str] = field(default_factory=list)  # paths not taken as asked: their search proves nothing
    unsearched: list[str] = field(default_factory=list)  # "path: place" that could not be searched


class AuditIncomplete(QsandboxError):
    """Places the audit promised could not be searched: whatever it found, that is not a pass."""


def audit(
    client: docker.DockerClient,
    paths: tuple[str, ...],
    say: Callable[[str], None],
    restart_engine: str | None = None,
    run_options: tuple[str, ...] = (),
    allow_unsearched: tuple[str, ...] = (),
) -> Outcome:
    """Run each exit path with a fresh canary and search everywhere, during the run and after.

    `restart_engine` is a shell command that restarts the engine; the engine-restart path runs it
    while the script sleeps holding the key. `run_options` go to every `qsandbox run`.
    `allow_unsearched` names places (`PLACE_KEYS`) the caller knows cannot be read here: they are
    reported as not searched but do not fail the audit. Any other place not searched raises
    AuditIncomplete once every path has run.
    """
    if ENGINE_RESTART in paths and not restart_engine:
        raise UsageError(
            "the engine-restart path needs --engine-restart COMMAND, the command that restarts "
            "your engine (e.g. 'systemctl restart docker')"
        )
    unknown = set(allow_unsearched) - set(PLACE_KEYS)
    if unknown:
        raise UsageError(f"unknown place(s) {', '.join(sorted(unknown))}: choose from {', '.join(PLACE_KEYS)}")
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="qsandbox-audit-") as tmp:
        script = Path(tmp, "audit_script.py")
        script.write_text(AUDIT_SCRIPT)
        os.chmod(tmp, 0o755)  # noqa: S103 - the sandbox user must read it; it holds no secret
        os.chmod(script, 0o644)
        for path in paths:
            value = canary()
            search = LeakSearch(client, value)
            done, live = _launch(path, value, script, search, restart_engine, run_options)
            output = Place("the run's stdout and stderr (redacted)", "output", searched=1)
            if search._grep(done.stdout + done.stderr):
                output.hits.append("output")
            left = _wait_gone(client, search.run_ids)
            places = [*live, output, left, *search.all()]
            hits = sum(len(p.hits) for p in places)
            outcome.hits += hits
            missed = not_searched(places, allow_unsearched)
            outcome.unsearched += [f"{path}: {m}" for m in missed]
            taken = done.returncode == EXPECTED_EXIT[path] and b"key: ***" in done.stdout
            if not taken:
                outcome.broken.append(path)
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                say(
                    f"exit path {path}: NOT TAKEN: launcher exit {done.returncode} (expected "
                    f"{EXPECTED_EXIT[path]}), key {'seen' if b'key: ***' in done.stdout else 'never seen'} "
                    f"by the script; {tail[0]}"
                )
            unsearched = f", {len(missed)} place(s) NOT SEARCHED" if missed else ""
            say(f"exit path {path}: launcher exit {done.returncode}, {hits} hit(s){unsearched}")
            for p in places:
                accepted = " (accepted: --allow-unsearched)" if p.failed and p.key in allow_unsearched else ""
                say(f"  {p.line()}{accepted}")
    if outcome.unsearched:
        broken = f"; exit path(s) not taken: {', '.join(outcome.broken)}" if outcome.broken else ""
        raise AuditIncomplete(
            f"audit found {outcome.hits} hit(s){broken}; NOT A PASS: {len(outcome.unsearched)} place(s) could not "
            f"be searched ({'; '.join(outcome.unsearched[:6])}), so their zero proves nothing"
        )
    return outcome
