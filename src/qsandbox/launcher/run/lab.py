"""`qsandbox lab [DIR]`: JupyterLab in a sandbox, in this machine's browser through the launcher.

A lab is a run (launcher/run/run.py) with this module as its plan (`LabPlan`, the `lab` seam of `Run`):

- in: DIR goes in as --workdir does (credential stores left out and named); the digest of each
  file sent is noted, from the archive itself;
- the image: JupyterLab is not in the base image: it is a derived image built on first use
  (launcher/engine/deps.py, as a script's dependencies are), listed by `qsandbox images`;
- the token: made here (`secrets`), sent in the start message only (common/handoff.py), written by
  the entry point where JupyterLab reads it. It is never in a process's arguments or this
  process's environment: the browser is opened on a private file (0600, in a directory of ours
  0700) that redirects to the URL, as Jupyter does itself. The sandbox never chooses what is
  printed or opened: the URL is made here;
- the way in: `Listener` takes connections on a random port of 127.0.0.1 and relays each as a
  channel the launcher opens (an even id, common/mux.py) to the sandbox, whose entry point connects
  it to JupyterLab's port and nothing else (inside/lab.py). HTTP and the kernels' WebSockets are
  bytes. Others on this machine reach the port too: JupyterLab answers nothing without the token;
- out: when the lab ends (Ctrl-C, File > Shut Down, --timeout, a signal) what changed under /work
  comes back, masked inside, through the usual /output stream, extracted safely (launcher/run/transfer.py)
  into a private staging directory, then `merge`d into DIR: a file changed here meanwhile is not
  overwritten, the sandbox's version is written beside it (NAME.sandbox.EXT) and named. With
  --output OUT the work goes to OUT (as run's --output) and DIR is left untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import threading
import webbrowser
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, BinaryIO

from ...common import mux
from ...common.paths import LAB_TARGET
from ...common.text import shown
from ..core.credentials import KeySource
from ..core.needs import Needs
from ..core.settings import RunSettings
from . import transfer

JUPYTERLAB = "jupyterlab==4.6.6"
MODULE = "qsandbox.inside.jupyter"
ANSWER_TIMEOUT = 150.0  # the sandbox's answer to a channel (it waits for JupyterLab to listen)
SUFFIX = ".sandbox"  # NAME.sandbox.EXT: the sandbox's version beside a file changed here meanwhile


def needs(requirements: Needs | None) -> Needs:
    """JupyterLab, and whatever --requirements adds: the lab's derived image."""
    from packaging.requirements import Requirement

    extra = requirements.requirements if requirements is not None else ()
    source = "qsandbox lab" + (f" and {requirements.source}" if requirements is not None else "")
    return Needs((Requirement(JUPYTERLAB), *extra), requirements.requires_python if requirements else None, source)


def _digests(archive: IO[bytes]) -> dict[str, str]:
    """name -> sha256 of every file in the inputs' archive: exactly what was sent."""
    found = {}
    archive.seek(0)
    try:
        with tarfile.open(fileobj=archive, mode="r:") as tar:
            for member in tar:
                f = tar.extractfile(member) if member.isfile() else None
                if f is None:
                    continue
                h = hashlib.sha256()
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                found[member.name] = h.hexdigest()
    finally:
        archive.seek(0)
    return found


class Listener:
    """Browser connections on 127.0.0.1:<random>, each relayed as a channel we open to the lab.

    Every local account reaches a loopback port. Without the token JupyterLab answers 403, but each
    connection would still hold one of the stream's channels (mux.MAX_CHANNELS): another account
    holding them all would lock the user out of their own lab. So a connection is taken only from
    the launcher's own uid (and root, and under sudo the invoking user's), by the owner the kernel
    lists for its other end; any other is closed at once, and said once per uid.
    """

    def __init__(self, channels: mux.Channels, say: Callable[[str], None] = lambda _s: None) -> None:
        self.channels, self.say = channels, say
        self.allowed = allowed_uids()
        self._refused: set[int | None] = set()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self._closed = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True, name="lab-accept").start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            uid = peer_uid(conn)
            if uid not in self.allowed:
                conn.close()
                if uid not in self._refused:
                    self._refused.add(uid)
                    who = "an unknown account" if uid is None else f"uid {uid}"
                    self.say(f"refused a connection to the lab from {who}: only yours are taken")
                continue
            try:
                threading.Thread(target=self._relay, args=(conn,), daemon=True).start()
            except RuntimeError:
                conn.close()

    def _relay(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            ch = self.channels.open(conn, LAB_TARGET.encode())
        except OSError:
            conn.close()
            return
        if ch is None:  # too many at once: the browser retries
            conn.close()
            return
        if not ch.opened.wait(ANSWER_TIMEOUT) or self._closed.is_set():
            ch.abort()
            return
        if ch.refusal is not None:
            self.channels.forget(ch.ident)
            conn.close()
            return
        try:
            ch.start()
        except RuntimeError:
            ch.abort()


def allowed_uids() -> set[int | None]:
    """Whose connections the lab takes: ours, root's, and under sudo the invoking user's."""
    uids: set[int | None] = {os.geteuid(), 0}
    sudo = os.environ.get("SUDO_UID", "")
    if os.geteuid() == 0 and sudo.isdigit():
        uids.add(int(sudo))
    return uids


def peer_uid(conn: socket.socket) -> int | None:
    """The uid owning the other end of a connection accepted on 127.0.0.1: the kernel lists the
    client's socket in /proc/net/tcp with its owner. None if it is not there (gone already)."""
    ours, theirs = conn.getsockname()[1], conn.getpeername()[1]
    loopback = f"{int.from_bytes(socket.inet_aton('127.0.0.1'), sys.byteorder):08X}"  # as the kernel writes it
    try:
        with open("/proc/net/tcp") as table:
            rows = table.read().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        fields = row.split()
        local, remote = fields[1].split(":"), fields[2].split(":")
        if local == [loopback, f"{theirs:04X}"] and remote == [loopback, f"{ours:04X}"]:
            return int(fields[7])
    return None


def _private_dir(kind: str, base: str | None = None) -> Path:
    """A new 0700 directory of ours, named after this process: `forget_stale` removes those of a
    launcher that was killed before it could (SIGKILL)."""
    _forget_stale(kind, base)
    return Path(tempfile.mkdtemp(prefix=f"qsandbox-{kind}-{os.getpid()}-", dir=base))


def _forget_stale(kind: str, base: str | None) -> None:
    where = Path(base or tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in where.iterdir():
            parts = entry.name.split("-")
            if entry.name.startswith(f"qsandbox-{kind}-") and len(parts) >= 4 and parts[2].isdigit():
                st = entry.lstat()
                if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not _alive(int(parts[2])):
                    shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _open_browser(url: str, local: ExitStack, say: Callable[[str], None]) -> None:
    """The browser, on a private file that redirects to `url`: the token is in no process's arguments."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        say("no display here: open the URL above in a browser (or use --no-browser to say so)")
        return
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    where = _private_dir("lab", runtime if runtime and os.path.isdir(runtime) else None)
    local.callback(shutil.rmtree, where, True)
    page = where / "open.html"
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(
            f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={url}">'
            f'</head><body><p><a href="{url}">qsandbox lab</a></p></body></html>\n'
        )
    threading.Thread(target=webbrowser.open, args=(page.as_uri(),), daemon=True).start()


@dataclass
class LabPlan:
    """What makes a run a lab: the seam `Run` calls (`collect`, `token`, `serve`)."""

    directory: Path
    open_browser: bool = True
    token: str = field(default_factory=lambda: secrets.token_hex(24), repr=False)
    sent: dict[str, str] = field(default_factory=dict)  # name -> digest of what went in
    url: str = ""
    listener: Listener | None = None

    def collect(self, settings: RunSettings) -> transfer.Inputs:
        """DIR, whole, as --workdir sends it; /work gets room for the lab's new files too."""
        inputs = transfer.collect(None, workdir=self.directory, includes=settings.includes, limit=settings.input_limit)
        self.sent = _digests(inputs.archive)
        inputs.tmpfs_size += settings.hardening.output_size
        return inputs

    def serve(self, channels: mux.Channels, local: ExitStack, say: Callable[[str], None]) -> None:
        """Listen, say the URL, open the browser (after the start message: a channel may follow at once)."""
        self.listener = Listener(channels, say)
        local.callback(self.listener.close)
        self.listener.start()
        self.url = f"http://127.0.0.1:{self.listener.port}/lab?token={self.token}"
        say(f"lab at {self.url}")
        say("end it with File > Shut Down or Ctrl-C: what changed under /work then comes back")
        if self.open_browser:
            _open_browser(self.url, local, say)


# -- the work back into DIR -----------------------------------------------------------------------


def _digest_fd(fd: int) -> str:
    h = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _beside(parent: int, name: str) -> str:
    """NAME.sandbox.EXT, or NAME.sandbox-2.EXT, ...: a name free in `parent`."""
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    for n in range(1, 1000):
        candidate = f"{stem}{SUFFIX}{'' if n == 1 else f'-{n}'}{dot}{ext}"
        try:
            os.stat(candidate, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return candidate
    raise OSError(f"no free name beside {name}")


@dataclass
class Merged:
    written: list[str] = field(default_factory=list)
    beside: list[tuple[str, str]] = field(default_factory=list)  # (name in DIR, where the sandbox's went)
    failed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # names DIR does not take (control characters)


def merge(staging: Path, directory: Path, sent: Mapping[str, str]) -> Merged:
    """Each file of `staging` into `directory` at its place: written if the file there is as it was
    sent (or absent), else written beside it; a name with a control character is refused.
    Directories are opened one by one with O_NOFOLLOW below DIR: nothing follows a link out of it."""
    result = Merged()
    top = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for path in sorted(p for p in staging.rglob("*") if p.is_file() and not p.is_symlink()):
            name = path.relative_to(staging).as_posix()
            if any(ord(c) < 32 or ord(c) == 127 for c in name):  # a terminal would act on it: not in DIR
                result.refused.append(name)
                continue
            try:
                _merge_one(top, path, name, sent.get(name), result)
            except OSError as e:
                result.failed.append(f"{name} ({e.strerror or e})")
    finally:
        os.close(top)
    return result


def _merge_one(top: int, path: Path, name: str, sent: str | None, result: Merged) -> None:
    *dirs, base = name.split("/")
    fds = [top]
    try:
        for d in dirs:
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, 0o755, dir_fd=fds[-1])
            fds.append(os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fds[-1]))
        parent = fds[-1]
        target, mode = base, 0o644
        try:
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except FileNotFoundError:
            fd = None
        except OSError:  # a link or something else in its place: never followed, never replaced
            fd, sent = None, "something else"
            target = _beside(parent, base)
        if fd is not None:
            try:
                st = os.fstat(fd)
                mode = stat.S_IMODE(st.st_mode) & 0o666
                if not stat.S_ISREG(st.st_mode) or sent is None or _digest_fd(fd) != sent:
                    target = _beside(parent, base)  # changed here meanwhile (or never sent): not overwritten
            finally:
                os.close(fd)
        tmp = f".{target}.qsandbox-{secrets.token_hex(4)}"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
        try:
            with os.fdopen(out, "wb") as dst, open(path, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, target, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            raise
        prefix = "/".join(dirs) + "/" if dirs else ""
        if target == base:
            result.written.append(name)
        else:
            result.beside.append((name, prefix + target))
    finally:
        for fd in fds[1:]:
            os.close(fd)


def run(
    directory: Path,
    settings: RunSettings,
    source: KeySource,
    *,
    open_browser: bool,
    out: BinaryIO | None = None,
    err: BinaryIO | None = None,
) -> Any:
    """The lab, end to end; returns the run's RunResult after the work is back in DIR (or --output)."""
    from .run import Run

    err = err or sys.stderr.buffer
    plan = LabPlan(directory.resolve(), open_browser=open_browser)

    def say(text: str) -> None:
        err.write(f"qsandbox: {text}\n".encode())
        err.flush()

    staging = None
    if settings.output is None:  # the work comes back into DIR, through a staging directory of ours
        staging = _private_dir("labwork")
        settings = replace(settings, output=staging)
    try:
        the_run = Run(settings, source, out=out or sys.stdout.buffer, err=err, prompt=None, lab=plan)
        result = the_run.execute()
        receiver = the_run.learned.receiver
        if staging is not None and (receiver is None or receiver.delivered is None):
            say(f"nothing came back from the sandbox: {shown(str(plan.directory))} is as it was")
        elif staging is not None:
            merged = merge(staging, plan.directory, plan.sent)
            shown_dir = shown(str(plan.directory))
            for name in merged.written:
                say(f"back in {shown_dir}: {shown(name)}")
            for name, beside in merged.beside:
                say(
                    f"{shown(name)} changed here while the lab ran: the sandbox's version is {shown(beside)}, "
                    "beside it (yours is untouched)"
                )
            for what in merged.failed:
                say(f"could not write back {shown(what)}")
            for name in merged.refused:
                say(f"refused from the lab: {shown(name)} (control characters in its name; not written to DIR)")
            if not (merged.written or merged.beside or merged.failed or merged.refused):
                say(f"nothing changed under /work: {shown(str(plan.directory))} is as it was")
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return result
