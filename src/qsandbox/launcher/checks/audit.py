"""`qsandbox audit`: send a canary key through real runs, then search every place it could leak.

The places are the rows of the secret-leak facts we design against. While the run holds the key:
the live sandbox as the engine describes it (inspect, processes, filesystem diff), every other
container, the engine's events so far, and every host process's argv and environment (the
launcher's above all). After the run: the engine's view of every object (`docker inspect`, image
history), the engine's data root (container directories, logs, every layer), the engine's runtime
state (`/run/docker`, `/run/containerd`, `/var/lib/containerd`, `/run/user/UID`), the journal, the
host's temp directories and home, the working tree, and the run's own output (which is redacted).

Every form of the key is searched for: literal, URL-encoded, and base64 and base64url at each of
base64's three alignments. A file is read when its content or metadata changed since the search
began (mtime or ctime: a copy that keeps its old mtime still gets a new ctime); unchanged files
are counted, not read. Files are read whole, in chunks; compressed ones (gzip, bzip2, xz, zstd
where a module reads it) decompressed too, git packs object by object.

Every search plants its own positive control in the same call, where it looks: a second canary
(files in each file place, containers, a network and a volume for the engine's views, processes for
argv and environment, entries for the journal). A place whose control is not found was not really
searched, whatever it read.

A place is searched, skipped (it does not exist here, with the reason), or NOT SEARCHED (it, or
something in it that may have changed during the run, could not be read; or its control was not
found; or it is on a remote engine's host). Zero hits counts only for places searched: a place not
searched fails the audit unless the caller accepted it by name.
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import errno
import gzip
import importlib
import lzma
import os
import secrets
import shutil
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

from ...common.errors import QsandboxError, UsageError
from ..core.settings import IMAGE, IMAGE_REPOSITORY, LABEL, VENV_PYTHON
from ..engine import client as engine
from ..engine import localplatform, sandbox

# Exit paths a run can take. engine-restart runs a command the caller gives (it needs to know how
# its engine is managed, and it disturbs every other user of the engine), so it is opt-in.
EXIT_PATHS = ("success", "error", "timeout", "sigint", "sigterm", "sighup", "sigkill")
ENGINE_RESTART = "engine-restart"
# `qsandbox lab`: a lab session whose kernel reads the key and writes it into /work; what comes back
# must be masked, and nothing may be left anywhere. Opt-in (`--path lab`): its first run builds the
# lab's derived image (JupyterLab).
LAB = "lab"
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
    LAB: 0,  # shut down from its own API, as File > Shut Down does
}
_SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sighup": signal.SIGHUP, "sigkill": signal.SIGKILL}
TIMEOUT_SECONDS = 30  # the timeout path: long enough to search the live sandbox, controls and all, before it fires
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
    "host-home", "project", "engine-host", "output", "leftovers",
)  # fmt: skip

AUDIT_SCRIPT = """
import os, sys, time
from qiskit_ibm_runtime.accounts import AccountManager
key = AccountManager.get().token
print("key:", key, flush=True)                      # must come out redacted
print("control:", sys.argv[3], flush=True)           # not the key: comes out whole, the output's control
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
        # The file lets the script end, and the sandbox is removed with it: exec_run's own inspect of
        # the finished exec can then find neither (404, seen over ssh://). The file was made.
        with contextlib.suppress(docker.errors.NotFound):
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
    planted: int = 0  # controls planted in this very search
    missed: list[str] = field(default_factory=list)  # controls planted and not found: NOT searched
    found: set[str] = field(default_factory=set)  # where the search saw the control (not hits)

    @property
    def failed(self) -> bool:
        """Not searched (wholly or in part), or blind to its own control: its zero hits prove nothing."""
        return bool(self.unreadable or self.missed)

    def expect(self, planted: Iterable[str]) -> None:
        """Each of `planted` must be among what the search saw of the control; the rest are missed."""
        wanted = list(planted)
        self.planted += len(wanted)
        self.missed += [f"{w} (planted, not found)" for w in wanted if w not in self.found]

    def line(self) -> str:
        """One line of audit output; a place not searched never reads as '0 hit(s)'."""
        if self.skipped:
            return f"skipped {self.name}: {self.skipped}"
        detail = f" ({', '.join(self.hits[:3])})" if self.hits else ""
        left = "; left out: " + ", ".join(f"{n} {why}" for why, n in sorted(self.left_out.items()))
        left = left if self.left_out else ""
        if self.failed:
            reasons = []
            if self.unreadable:
                more = f" and {len(self.unreadable) - 3} more" if len(self.unreadable) > 3 else ""
                reasons.append(f"could not read {', '.join(self.unreadable[:3])}{more}")
            if self.missed:
                more = f" and {len(self.missed) - 3} more" if len(self.missed) > 3 else ""
                reasons.append(f"its own control was not found: {', '.join(self.missed[:3])}{more}")
            return (
                f"NOT SEARCHED {self.name}: {'; '.join(reasons)}; "
                f"{len(self.hits)} hit(s) in the {self.searched} searched{detail}{left}"
                + (f" [--allow-unsearched {self.key}]" if self.key else "")
            )
        control = f"; control found ({self.planted} planted)" if self.planted else ""
        return f"{len(self.hits)} hit(s) in {self.name}: {self.searched} searched{detail}{control}{left}"


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


def control_value() -> str:
    """The control: a second canary, planted by each search where it looks and never a leak. It
    ends in characters URL-encoding changes, so its URL-encoded form differs from its literal one."""
    return canary()[:41] + "+/="


def _zstd_reader(f: Any) -> Any:
    """A reader of zstd-compressed `f`, or None when this Python has no zstd module."""
    try:
        return importlib.import_module("compression.zstd").ZstdFile(f)  # Python 3.14
    except ImportError:
        pass
    try:
        return importlib.import_module("zstandard").ZstdDecompressor().stream_reader(f)
    except ImportError:
        return None


_COMPRESSED = (
    (b"\x1f\x8b\x08", "gzip", lambda f: gzip.GzipFile(fileobj=f)),
    (b"BZh", "bzip2", lambda f: bz2.BZ2File(f)),  # and the block magic (_read)
    (b"\xfd7zXZ\x00", "xz", lambda f: lzma.LZMAFile(f)),  # noqa: SIM115 - a reader the caller closes
    (b"\x28\xb5\x2f\xfd", "zstd", _zstd_reader),
)
_OLD = 946684800  # 2000-01-01: the mtime a copy (cp -p, tar, copy2) may keep; a plant carries it
_DEADLINE = 20.0  # how long a search waits for the engine or journald to show its control


class LeakSearch:
    """Searches every place the canary might land, for everything written since it was created.

    Every search plants its own control in the same call, where it looks (files in each file
    place, containers, a network and a volume for the engine's views, processes for argv and
    environment, entries for the journal), and a place whose control is not found is NOT SEARCHED.
    The control is a second canary: the needles of both come from `encodings`, so a search that
    finds the control's forms would find the key's.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        value: str,
        project: Path | None = None,
        image: str = IMAGE,
        docker_host: str | None = None,
    ) -> None:
        self.client = client
        self.needles = encodings(value)
        self.control = control_value()
        self.control_needles = encodings(self.control)
        self._overlap = max(len(n) for n in [*self.needles, *self.control_needles])
        self.since = time.time() - 1
        self.project = project or Path.cwd()
        self.image = image  # the control containers' (an image the engine has)
        # Where the engine is (DOCKER_HOST's spelling; by default as docker.from_env() finds it). An
        # engine on another host: what it writes there cannot be read from here.
        configured = engine.configured_host(os.environ) if docker_host is None else (docker_host, None)
        self.docker_host = configured[0] if configured else None
        self.remote = engine.remote_url({"DOCKER_HOST": self.docker_host} if self.docker_host else {})
        self.run_ids: list[str] = []  # of the live sandboxes found (live_container)
        self.deadline = _DEADLINE  # seconds to wait for the engine or journald to show a control

    # -- matching --------------------------------------------------------------------------------

    def _grep(self, data: bytes) -> bool:
        return any(n in data for n in self.needles)

    def _scan(self, data: bytes) -> int:
        """1 when `data` holds a form of the key, 2 when it holds one of the control's; or both."""
        return int(self._grep(data)) | (2 if any(n in data for n in self.control_needles) else 0)

    def _scan_stream(self, f: Any) -> int:
        tail = b""
        found = 0
        while chunk := f.read(_CHUNK):
            data = tail + chunk
            found |= self._scan(data)
            tail = data[-self._overlap :]
        return found

    def _json_scan(self, obj: Any, where: str) -> tuple[list[str], list[str]]:
        """Paths (like `Config.Env[2]`) of every string in `obj` holding a form of the key, and of
        every one holding a form of the control."""
        if isinstance(obj, dict):
            hits: list[str] = []
            control: list[str] = []
            for k, v in obj.items():
                for h, c in (self._json_scan(k, f"{where}.{k} (the name)"), self._json_scan(v, f"{where}.{k}")):
                    hits += h
                    control += c
            return hits, control
        if isinstance(obj, list | tuple):
            hits, control = [], []
            for i, v in enumerate(obj):
                h, c = self._json_scan(v, f"{where}[{i}]")
                hits += h
                control += c
            return hits, control
        if obj is None or isinstance(obj, bool | int | float):
            return [], []
        found = self._scan(obj if isinstance(obj, bytes) else str(obj).encode())
        return ([where.lstrip(".")] if found & 1 else []), ([where.lstrip(".")] if found & 2 else [])

    def _json_hits(self, obj: Any, where: str) -> list[str]:
        return self._json_scan(obj, where)[0]

    # -- files -------------------------------------------------------------------------------------

    def _read(self, place: Place, path: str, name: str, git_dirs: dict[str, int | str]) -> int | None:
        """What the file at `path` holds (`_scan`), decompressed when it is compressed; None when it
        is gone. A file that cannot be read, or decompressed, makes the place NOT SEARCHED."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as e:
            place.unreadable.append(f"{path} ({e.strerror})")
            return None
        with os.fdopen(fd, "rb") as f:
            try:
                found = self._scan_stream(f)
                f.seek(0)
                head = f.read(10)
                if "/.git/objects/" in path and len(name) == 38:  # a loose git object: zlib
                    f.seek(0)
                    found |= self._scan(zlib.decompress(f.read()))
                for magic, kind, reader in _COMPRESSED:
                    if head.startswith(magic) and (kind != "bzip2" or head[4:10] == b"1AY&SY"):
                        f.seek(0)
                        inner = reader(f)
                        if inner is None:
                            place.unreadable.append(f"{path} ({kind}-compressed, and no {kind} module here)")
                            return None
                        with inner:
                            found |= self._scan_stream(inner)
                        place.left_out[f"{kind} file(s) searched decompressed too"] += 1
                if head.startswith(b"PACK") and name.endswith(".pack") and "/objects/pack/" in path:
                    found |= self._git_objects(place, path, git_dirs)
            except OSError as e:  # includes gzip's BadGzipFile; EOFError: a truncated stream
                place.unreadable.append(f"{path} ({e.strerror or e})")
                return None
            except (EOFError, zlib.error, lzma.LZMAError, ValueError) as e:
                place.unreadable.append(f"{path} (could not decompress it: {e})")
                return None
        return found

    def _git_objects(self, place: Place, pack: str, git_dirs: dict[str, int | str]) -> int:
        """Every object of the repository a pack file belongs to, through `git cat-file` (once per
        repository per search): a pack holds them compressed, and as deltas."""
        git_dir = str(Path(pack).parents[2])
        if git_dir not in git_dirs:
            argv = [
                "git",
                "-c",
                "safe.directory=*",
                f"--git-dir={git_dir}",
                "cat-file",
                "--batch-all-objects",
                "--batch",
            ]
            try:
                with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
                    assert p.stdout is not None and p.stderr is not None
                    found = self._scan_stream(p.stdout)
                    err = p.stderr.read()
                git_dirs[git_dir] = found if p.returncode == 0 else f"git cat-file exit {p.returncode}: {err[:200]!r}"
            except OSError as e:
                git_dirs[git_dir] = f"git cat-file: {e}"
        result = git_dirs[git_dir]
        if isinstance(result, str):
            raise OSError(0, f"its repository's objects could not be read ({result})")
        place.left_out["git pack(s) searched object by object too"] += 1
        return result

    def _files(  # noqa: C901 - the leak search's walk (pseudo fs, overlays, archives): split later
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
        out and counted. Compressed files (gzip, bzip2, xz, zstd where a module reads it) are
        searched decompressed too, git packs object by object; one that cannot be decompressed
        makes the place NOT SEARCHED. Files holding the control go to `place.found`.
        """
        mounts = _mount_types() if mounts is None else mounts
        skip = set(skip_dirs)
        git_dirs: dict[str, int | str] = {}
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
                found = self._read(place, path, entry.name, git_dirs)
                if found is None:
                    continue
                place.searched += 1
                if found & 1:
                    place.hits.append(path)
                if found & 2:
                    place.found.add(path)

    def _plant_files(self, place: Place, directory: Path) -> Path | None:
        """The control in `directory`: a new directory, and in a directory inside it one file per
        form (each with an mtime far in the past, as a copy keeps it; its ctime is now) and one
        gzip-compressed. Returns the new directory; the files are in its `deeper`."""
        planted = directory / f"qsandbox-control-{secrets.token_hex(6)}"
        try:
            planted.mkdir(mode=0o700)
            (planted / "deeper").mkdir(mode=0o700)
            for form, data in planted_forms(self.control).items():
                p = planted / "deeper" / form
                p.write_bytes(b"text before\n" + data + b"text after\n")
                os.utime(p, (_OLD, _OLD))
            (planted / "deeper" / "gzip.gz").write_bytes(gzip.compress(planted_forms(self.control)["literal"]))
        except OSError as e:
            shutil.rmtree(planted, ignore_errors=True)
            place.planted += 1
            place.missed.append(f"the control for {directory} (could not plant it: {e.strerror})")
            return None
        return planted

    def _tree(
        self, name: str, key: str, root: Path, skip_dirs: Iterable[str] = (), plant_in: Path | None = None, **kw: Any
    ) -> Place:
        """A file place: its control planted (in `plant_in`, else in `root`), then searched."""
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
        planted = self._plant_files(place, plant_in or root)
        try:
            self._files(place, root, skip_dirs, **kw)
        finally:
            if planted is not None:
                shutil.rmtree(planted, ignore_errors=True)
        if planted is not None:
            names = [*planted_forms(self.control), "gzip.gz"]
            place.expect(str(planted / "deeper" / n) for n in names)
            place.searched -= len(names)  # the controls are not what was searched for the key
            if str(planted / "deeper" / "gzip.gz") in place.found:
                place.left_out["gzip file(s) searched decompressed too"] -= 1
                place.left_out += Counter()  # drops a count that fell to zero
        return place

    def _remote_place(self, name: str, key: str) -> Place:
        return Place(
            name,
            key,
            unreadable=[f"it from here: it is on the engine's host ({self.remote}), not this machine; search it there"],
        )

    # -- the control in the engine -----------------------------------------------------------------

    def _control_labels(self) -> dict[str, str]:
        return {f"qsandbox.control.{form}": d.decode().strip() for form, d in planted_forms(self.control).items()}

    def _control_container(self, run: bool) -> tuple[str, str]:
        """A container carrying every form of the control in its entrypoint's argv, environment and
        labels, its name (base64url form), and, once running, a file whose name holds the URL-encoded
        form (the filesystem diff). Returns its id and its marker (in its command)."""
        forms = {form: d.decode().strip() for form, d in planted_forms(self.control).items()}
        marker = f"qsandbox-control-{secrets.token_hex(6)}"
        url = forms["url-encoded"]
        api = self.client.api
        created = api.create_container(
            self.image,
            command=[marker, *forms.values()],
            entrypoint=["/bin/sh", "-c", 'touch "/tmp/$1"; sleep 600; exit 0', "sh", url],
            environment={f"QSANDBOX_CONTROL_{i}": v for i, v in enumerate(forms.values())},
            labels={LABEL: marker, **self._control_labels()},
            name=f"qsandbox-control-{forms['base64url+0'].split(':', 1)[1].rstrip('=')}-{marker[-12:]}",
            host_config=api.create_host_config(network_mode="none"),
        )
        cid = str(created["Id"])
        if run:
            try:
                api.start(cid)
            except docker.errors.DockerException:
                self._remove_container(cid)
                raise
        return cid, marker

    def _remove_container(self, cid: str) -> None:
        # Gone already: fine; a container left would show in the leftovers of the tests' session.
        with contextlib.suppress(docker.errors.DockerException):
            self.client.api.remove_container(cid, force=True)

    # -- after the run -----------------------------------------------------------------------------

    def engine_objects(self) -> Place:
        """Every container, network and volume, and qsandbox's images with their history, as the
        engine describes them. Its control: a container, a network and a volume carrying the
        control's forms (environment, labels), and a qsandbox image committed from that container
        with the control as its commit message (its Comment and history), made in the same call."""
        place = Place(
            "docker inspect (containers, networks, volumes, qsandbox images and their history)", "engine-objects"
        )
        api = self.client.api
        planted: list[tuple[str, str]] = []  # (kind, id or name)
        tag = f"qsandbox-control-{secrets.token_hex(6)}"
        try:
            try:
                made = self._control_container(run=False)[0]
                planted.append(("container", made))
                committed = api.commit(made, IMAGE_REPOSITORY, tag.removeprefix("qsandbox-"), message=self.control)
                planted.append(("image", str(committed["Id"])))
                planted.append(
                    ("network", str(api.create_network(tag, labels=self._control_labels(), internal=True)["Id"]))
                )
                planted.append(("volume", str(api.create_volume(tag, labels=self._control_labels())["Name"])))
            except docker.errors.DockerException as e:
                place.planted += 1
                place.missed.append(f"the control objects (could not make them: {e})")
            blobs = self._engine_blobs(place)
        finally:
            for kind, ident in planted:
                try:
                    if kind == "container":
                        self._remove_container(ident)
                    elif kind == "network":
                        api.remove_network(ident)
                    elif kind == "image":
                        api.remove_image(ident, force=True)
                    else:
                        api.remove_volume(ident, force=True)
                except docker.errors.DockerException:
                    pass
        for k, v in blobs.items():
            hits, control = self._json_scan(v, "")
            place.hits += [f"{k} {h}" for h in hits]
            if control:
                place.found.add(k)
        place.searched = len(blobs) - len(planted)
        shown = {"container": lambda i: i[:12], "image": lambda i: i.removeprefix("sha256:")[:12]}
        place.expect(f"{kind} {shown[kind](ident) if kind in shown else tag}" for kind, ident in planted)
        return place

    def _engine_blobs(self, place: Place) -> dict[str, Any]:
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
        return blobs

    def data_root(self) -> Place:
        """Everything in the engine's data root that changed: containers, logs, every layer.

        Whole layers are walked, not only layers made during the run: a write deep inside an
        existing layer leaves its top directory's times alone. The control goes into its tmp/.
        """
        if self.remote:
            return self._remote_place("engine data root (container dirs, logs, layers)", "data-root")
        try:
            root = Path(self.client.info().get("DockerRootDir") or "/var/lib/docker")
        except docker.errors.DockerException as e:
            return Place("engine data root", "data-root", unreadable=[f"the engine's info ({e})"])
        tmp = root / "tmp"
        place = self._tree("engine data root", "data-root", root, plant_in=tmp if os.path.isdir(tmp) else None)
        place.name += " (container dirs, logs, layers)"
        if place.skipped:  # the engine says its data lives there: absent is not "nothing to find"
            place.unreadable.append(f"{root} ({place.skipped})")
            place.skipped = ""
        return place

    def runtime_dirs(self) -> list[Path]:
        """The engine's and containerd's state outside the data root; the runtime directory
        (/run/user/UID: rootless Podman's and rootless Docker's state, libpod, exec-root) of this
        user and of the user whose engine socket lives under /run/user."""
        dirs = [Path("/run/docker"), Path("/run/containerd"), Path("/var/lib/containerd")]
        uids = [os.getuid()]
        if self.docker_host and self.docker_host.startswith("unix:///run/user/"):
            owner = self.docker_host[len("unix:///run/user/") :].split("/", 1)[0]
            if owner.isdigit():
                uids.append(int(owner))
        dirs += [Path(f"/run/user/{uid}") for uid in dict.fromkeys(uids)]
        return dirs

    def engine_runtime(self) -> list[Place]:
        """The engine's runtime state (runtime_dirs), when present; each with its control."""
        if self.remote:
            return [self._remote_place("engine runtime state (/run/docker, /run/containerd, ...)", "engine-run")]
        return [self._tree("engine runtime state", "engine-run", d, changed_only=False) for d in self.runtime_dirs()]

    def journal(self) -> Place:
        """The systemd journal since the search began, as `journalctl` exports it, with control
        entries logged in the same call. NOT SEARCHED when any journal file is not ours to read:
        journalctl then shows only what it could open (a user's own entries, where the control
        lands too), and says so only on stderr."""
        place = Place("the systemd journal since the search began", "journal")
        if self.remote:
            place.name = "this machine's systemd journal since the search began (the launcher's)"
        if not Path("/run/systemd/journal/socket").exists():
            place.skipped = "no journald running here (/run/systemd/journal/socket absent)"
            return place
        place.unreadable += _unreadable_journal_files()
        tag = f"qsandbox-control-{secrets.token_hex(6)}"
        forms = planted_forms(self.control)
        for data in forms.values():
            try:
                subprocess.run(["systemd-cat", "-t", tag], input=data, check=True, capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError) as e:
                place.planted += 1
                place.missed.append(f"a control entry (systemd-cat: {e})")
                return place
        argv = ["journalctl", "--no-pager", "-o", "export", f"--since=@{int(self.since)}"]
        end = time.monotonic() + self.deadline
        while True:
            try:
                done = subprocess.run(argv, capture_output=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                place.unreadable.append(f"journalctl ({e})")
                return place
            if done.returncode != 0 or done.stderr.strip():
                # Without -q journalctl says what it could not read ("No journal files were opened
                # due to insufficient permissions", "you are currently not seeing messages from
                # other users and the system", a truncated file): each is a part not searched.
                said = done.stderr.decode(errors="replace").strip().splitlines()[:2]
                place.unreadable.append(f"journalctl (exit {done.returncode}: {' / '.join(said)[:300]})")
                return place
            entries = done.stdout.split(b"\n\n")
            mine = [e for e in entries if f"\nSYSLOG_IDENTIFIER={tag}\n".encode() in b"\n" + e + b"\n"]
            place.found = {f"{tag} entry {i}" for i, e in enumerate(mine) if self._scan(e) & 2}
            if len(place.found) >= len(forms) or time.monotonic() > end:
                break
            time.sleep(0.2)  # journald writes the entries a moment after systemd-cat hands them over
        place.searched = len([e for e in entries if e.strip()]) - len(mine)
        place.expect(f"{tag} entry {i}" for i in range(len(forms)))
        if any(self._grep(e) for e in entries):
            place.hits.append("journal entries")
        return place

    def host_dirs(self) -> list[Place]:
        places = []
        keys = {"/tmp": "host-tmp", "/var/tmp": "host-var-tmp", "/dev/shm": "host-dev-shm", "/var/log": "host-var-log"}  # noqa: S108
        mounts = _mount_types()
        host = "launcher host" if self.remote else "host"  # a remote engine's own host: engine-host
        for d, key in keys.items():
            places.append(self._tree(host, key, Path(d), mounts=mounts))
        places.append(self._tree(f"{host} home", "host-home", Path.home(), mounts=mounts))
        places.append(self._tree("project tree", "project", self.project, mounts=mounts))
        if self.remote:
            places.append(
                self._remote_place("the engine's host: its /tmp, /var/tmp, /dev/shm, /var/log, journal", "engine-host")
            )
        return places

    def all(self) -> list[Place]:
        """Every place to search after a run."""
        return [self.engine_objects(), self.data_root(), *self.engine_runtime(), self.journal(), *self.host_dirs()]

    # -- while the run holds the key -------------------------------------------------------------

    def live_container(self, marker: str) -> Place:
        """The running sandbox whose command holds `marker`, as the engine describes it.

        Inspect (Config.Env, Cmd, Entrypoint, Labels, Name, HostConfig, Mounts, everything), its
        processes (`top`) and its filesystem changes (`diff`). Not found running: NOT SEARCHED.
        Its control: a running container, labelled as a sandbox is, carrying the control in each of
        those (a file named after it for `diff`), found by the same listing in the same call.
        """
        place = Place("the live sandbox (inspect, top, diff)", "live-container")
        try:
            control, control_marker = self._control_container(run=True)
        except docker.errors.DockerException as e:
            place.planted += 1
            place.missed.append(f"the control container (could not start it: {e})")
            control, control_marker = "", ""
        try:
            end = time.monotonic() + self.deadline
            while True:  # until the engine shows the control everywhere (its process, its file)
                attempt = Place(place.name, place.key, planted=place.planted, missed=list(place.missed))
                ids = self._live_container(attempt, marker, control, control_marker)
                if not control or {"top", "diff"} <= attempt.found or attempt.unreadable or time.monotonic() > end:
                    break
                time.sleep(0.2)
        finally:
            if control:
                self._remove_container(control)
        self.run_ids += ids
        if control:
            wanted = ["Config.Env", "Config.Labels", "Config.Entrypoint", "Config.Cmd", "Name", "top", "diff"]
            attempt.expect(w for w in wanted if f"{w} (the engine could not give it)" not in attempt.left_out)
        return attempt

    def _live_container(self, place: Place, marker: str, control: str, control_marker: str) -> list[str]:
        api = self.client.api
        run_ids: list[str] = []
        try:
            listed = api.containers(filters={"label": LABEL})
            found = [c for c in listed if marker in (c.get("Command") or "")]
            mine = [c for c in listed if control and control_marker in (c.get("Command") or "")]
            if control and not mine:
                place.missed.append("the control container (not listed running with the sandboxes' label)")
            for c in [*found, *mine]:
                is_control = c["Id"] == control
                attrs = api.inspect_container(c["Id"])
                parts: list[tuple[str, Any]] = [("", attrs)]
                # ps cuts each command line to its terminal width unless told not to (-ww).
                top = lambda cid: api.top(cid, ps_args="-ef -ww")  # noqa: E731 - a one-line adapter
                for what, call in (("top", top), ("diff", api.diff)):
                    try:
                        parts.append((what, call(c["Id"])))
                    except (docker.errors.APIError, ValueError):
                        # Rootless Podman on cgroup v1 answers `top` with no JSON. The processes
                        # are still searched from the host (argv, environment): said, not hidden.
                        place.left_out[f"{what} (the engine could not give it)"] += 1
                for what, data in parts:
                    hits, seen = self._json_scan(data, what)
                    if is_control:  # where it was seen: Config.Env, Config.Labels, Name, top, diff, ...
                        place.found |= {what or ".".join(s.split("[", 1)[0].split(".")[:2]) for s in seen}
                        continue
                    place.hits += [f"container {c['Id'][:12]} {h}" for h in hits]
                if not is_control:
                    place.searched += 1
                    run_ids.append(str((attrs["Config"].get("Labels") or {}).get(LABEL)))
        except docker.errors.DockerException as e:
            place.unreadable.append(f"the engine's API ({e})")
            return run_ids
        if not found:
            place.unreadable.append(f"the run's container (none running with {marker!r} in its command)")
        return run_ids

    def engine_events(self) -> Place:
        """Every event the engine reported since the search began (labels, names, images, exit
        codes). Its control: a container created (and removed) with the control in its labels, in
        the same call; the stream is read until its events show."""
        place = Place("the engine's events since the search began", "engine-events")
        try:
            control, _ = self._control_container(run=False)
        except docker.errors.DockerException as e:
            place.planted += 1
            place.missed.append(f"the control container (could not create it: {e})")
            control = ""
        self._remove_container(control) if control else None
        end = time.monotonic() + self.deadline
        while True:
            attempt = Place(place.name, place.key, planted=place.planted, missed=list(place.missed))
            try:
                # Whole seconds, the window widened outwards: Podman answers a fractional since or
                # until with no events at all (seen: 0 events where a control had 2), which its
                # control would catch as NOT SEARCHED, but that searched nothing.
                window = {"since": int(self.since), "until": int(time.time()) + 1}
                for event in self.client.api.events(decode=True, **window):  # type: ignore[call-overload]
                    hits, seen = self._json_scan(event, "")
                    actor = str((event.get("Actor") or {}).get("ID") or event.get("id") or "")
                    if actor == control and seen:
                        attempt.found.add(f"event {event.get('Action')} of the control container")
                        continue
                    attempt.searched += 1
                    attempt.hits += [f"event {event.get('Type')} {event.get('Action')} {h}" for h in hits]
            except docker.errors.DockerException as e:
                attempt.unreadable.append(f"the engine's event stream ({e})")
                return attempt
            if not control or attempt.found or time.monotonic() > end:
                break
            time.sleep(0.2)
        if control:
            attempt.expect(["event create of the control container"])
        return attempt

    def _control_processes(self) -> list[subprocess.Popen[bytes]]:
        """Two processes of ours: one with every form of the control in its argv, one in its
        environment; returned once each has exec'd (its /proc entry shows its own command)."""
        forms = [d.decode().strip() for d in planted_forms(self.control).values()]
        started = [
            subprocess.Popen(["/bin/sh", "-c", "read -r _", "qsandbox-control", *forms], stdin=subprocess.PIPE),
            subprocess.Popen(
                ["/bin/sh", "-c", "read -r _", "qsandbox-control"],
                stdin=subprocess.PIPE,
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    **{f"QSANDBOX_CONTROL_{i}": f for i, f in enumerate(forms)},
                },
            ),
        ]
        end = time.monotonic() + self.deadline
        for p in started:
            while time.monotonic() < end:
                try:
                    if b"read -r _" in Path(f"/proc/{p.pid}/cmdline").read_bytes():
                        break
                except OSError:
                    pass
                time.sleep(0.01)
        return started

    def processes(self, pids: Iterable[int] | None = None, name: str = "", key: str = "processes") -> Place:
        """The argv and environment of the given processes, or of every process on the host.

        A named process that cannot be read (gone, or not ours to read) makes the place NOT
        SEARCHED. In the sweep of every process, one that exits mid-sweep is passed over, and so
        are kernel threads and processes started before the search began that cannot be read (they
        were given their argv and environment before the key existed); any other unreadable one
        makes the place NOT SEARCHED. Its control: two processes started in the same call, one
        with the control in its argv, one in its environment, searched with the others.
        """
        named = pids is not None
        place = Place(name or "every host process's argv and environment (/proc)", key)
        controls = self._control_processes()
        try:
            wanted = {f"/proc/{controls[0].pid}/cmdline", f"/proc/{controls[1].pid}/environ"}
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()] if pids is None else [*pids]
            if named:
                pids += [p.pid for p in controls]
            mine = {p.pid for p in controls}
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
                    found = self._scan(data)
                    if pid in mine:
                        place.found |= {f"/proc/{pid}/{part}"} if found & 2 else set()
                        continue
                    place.searched += 1
                    if found & 1:
                        place.hits.append(f"/proc/{pid}/{part}")
        finally:
            for p in controls:
                p.kill()
                p.communicate()
        place.expect(sorted(wanted))
        return place

    def live(self, marker: str, launcher: int | None = None) -> list[Place]:
        """Every place to search while the run holds the key."""
        places = [self.live_container(marker), self.engine_objects(), self.engine_events(), self.processes()]
        places[1].name = "docker inspect, live (every container, network, volume, qsandbox image)"
        places[1].key = "live-engine"
        if launcher is not None:
            places.append(self.processes([launcher], "the launcher's argv and environment (/proc)", "launcher"))
        return places


def _unreadable_journal_files() -> list[str]:
    """Journal files (and directories) this process cannot read: journalctl leaves them out."""
    found = []
    for top in (Path("/var/log/journal"), Path("/run/log/journal")):
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue
            except OSError as e:
                found.append(f"{d}/ ({e.strerror})")
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif ".journal" in entry.name and not os.access(entry.path, os.R_OK):
                    found.append(
                        f"{entry.path} (not readable by uid {os.getuid()}: not in group systemd-journal or adm)"
                    )
    return found


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
    argv += [str(script), path, nonce, search.control]
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


LAB_CELL = """
from qiskit_ibm_runtime.accounts import AccountManager
key = AccountManager.get().token
open("/tmp/scratch.txt", "w").write(key)             # tmpfs: gone with the container
open("/work/audit.txt", "w").write("key: " + key + "\\ncontrol: CONTROL\\n")  # back into DIR, masked
print("wrote", len(key), flush=True)
"""
LAB_MARKER = "qsandbox.inside.jupyter"  # the lab sandbox's command holds it


def _launch_lab(
    value: str, search: LeakSearch, run_options: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[bytes], list[Place]]:
    """A lab session through the real launcher: its kernel reads the key and writes it into /work,
    the lab is searched live, shut down, and what came back into DIR is the run's "output"."""
    from .labclient import execute

    with tempfile.TemporaryDirectory(prefix="qsandbox-audit-lab-") as tmp:
        work = Path(tmp, "work")
        work.mkdir()
        argv = [sys.executable, "-m", "qsandbox", "lab", "--token-stdin", "--no-browser", *run_options, str(work)]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdin and p.stderr
        p.stdin.write(value.encode() + b"\n")
        p.stdin.close()
        p.stdin = None  # communicate() must not flush it again
        err, url = b"", ""
        while not url:
            line = p.stderr.readline()
            if not line:
                break
            err += line
            if line.startswith(b"qsandbox: lab at "):
                url = line.decode().split(" at ", 1)[1].strip()
        live: list[Place] = []
        if url:
            with contextlib.suppress(OSError, ValueError, KeyError):
                execute(url, LAB_CELL.replace("CONTROL", search.control))
            live = search.live(LAB_MARKER, launcher=p.pid)
            with contextlib.suppress(OSError):
                from .labclient import _request

                token = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]
                _request(url.split("/lab?", 1)[0] + "/api/shutdown", token, "POST")
        else:
            p.kill()
        rest, more = p.communicate(timeout=180)
        back = Path(work, "audit.txt").read_bytes() if Path(work, "audit.txt").is_file() else b""
    return subprocess.CompletedProcess(argv, p.returncode, rest + back, err + more), live


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
            if path == LAB:
                done, live = _launch_lab(value, search, run_options)
            else:
                done, live = _launch(path, value, script, search, restart_engine, run_options)
            output = Place("the run's stdout and stderr (redacted)", "output", searched=1)
            found = search._scan(done.stdout + done.stderr)
            if found & 1:
                output.hits.append("output")
            if found & 2:
                output.found.add("the control the script printed")
            output.expect(["the control the script printed"])
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
