"""`qsandbox lab [DIR]`: JupyterLab in a sandbox, in this machine's browser through the launcher.

A lab is a run (launcher/run.py) with this module as its plan (`LabPlan`, the `lab` seam of `Run`):

- in: DIR goes in as --workdir does (credential stores left out and named); the digest of each
  file sent is noted, from the archive itself;
- the image: JupyterLab is not in the base image: it is a derived image built on first use
  (launcher/deps.py, as a script's dependencies are), listed by `qsandbox images`;
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
  comes back, masked inside, through the usual /output stream, extracted safely (launcher/transfer.py)
  into a private staging directory, then `merge`d into DIR: a file changed here meanwhile is not
  overwritten, the sandbox's version is written beside it (NAME.sandbox.EXT) and named. With
  --output OUT the work goes to OUT (as run's --output) and DIR is left untouched.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import struct
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import webbrowser
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, BinaryIO, cast
from urllib.parse import parse_qs, urlsplit

from packaging.requirements import Requirement

from ..common import mux
from ..common.errors import UsageError
from ..common.paths import LAB_TARGET
from ..common.text import shown
from . import transfer
from .credentials import KeySource
from .deps import Needs
from .settings import RunSettings

JUPYTERLAB = "jupyterlab==4.6.6"
MODULE = "qsandbox.inside.jupyter"
ANSWER_TIMEOUT = 150.0  # the sandbox's answer to a channel (it waits for JupyterLab to listen)
SUFFIX = ".sandbox"  # NAME.sandbox.EXT: the sandbox's version beside a file changed here meanwhile


def needs(requirements: Needs | None) -> Needs:
    """JupyterLab, and whatever --requirements adds: the lab's derived image."""
    extra = requirements.requirements if requirements is not None else ()
    source = "qsandbox lab" + (f" and {requirements.source}" if requirements is not None else "")
    return Needs((Requirement(JUPYTERLAB), *extra), requirements.requires_python if requirements else None, source)


def settings_for(directory: Path, o: Mapping[str, Any], output: Path | None) -> RunSettings:
    """The run's settings for a lab of `directory` (the shared options, as `run` reads them)."""
    from . import options

    if o["workdir"] is not None:
        raise UsageError("qsandbox lab sends DIR whole: --workdir does not apply (name the directory as DIR)")
    settings: RunSettings = options.settings_for(
        directory, {**o, "requirements": None}, args=(MODULE,), output=output, lab=True
    )
    from .deps import from_requirements

    reqs = from_requirements(o["requirements"]) if o["requirements"] is not None else None
    return replace(settings, workdir=directory.resolve(), needs=needs(reqs))


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
    """Browser connections on 127.0.0.1:<random>, each relayed as a channel we open to the lab."""

    def __init__(self, channels: mux.Channels) -> None:
        self.channels = channels
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
        self.listener = Listener(channels)
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
        if staging is not None and (the_run.receiver is None or the_run.receiver.delivered is None):
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


# -- a lab's kernel, driven as a browser drives it (for `qsandbox audit --path lab`) ---------------


def _request(url: str, token: str, method: str = "GET", body: object = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http://127.0.0.1 only
    request.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(request, timeout=120) as r:  # noqa: S310 - http://127.0.0.1 only
        return cast(bytes, r.read())


class _WebSocket:
    """The least of RFC 6455 a kernel's channels need: one client, text frames, pings answered."""

    def __init__(self, port: int, path: str, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: token {token}\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise OSError(f"the lab refused the kernel's channels: {status!r}")

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise OSError("the lab closed the kernel's channels")
        return data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, payload: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        size = len(payload)
        head = bytes([0x80 | opcode])
        if size < 126:
            head += bytes([0x80 | size])
        elif size < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", size)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", size)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self) -> bytes | None:
        """The next text or binary message (None: closed); pings answered on the way."""
        while True:
            first, second = self._take(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack(">H", self._take(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self._take(8))[0]
            payload = self._take(size)
            opcode = first & 0x0F
            if opcode == 8:
                return None
            if opcode == 9:
                self.send(payload, opcode=10)
            elif opcode in (1, 2):
                return payload

    def close(self) -> None:
        self.sock.close()


def execute(url: str, code: str, timeout: float = 300) -> str:
    """Run `code` in a new kernel of the lab at `url` (the printed one), as a browser does; returns
    what it printed (and the error's name, if it failed)."""
    parts = urlsplit(url)
    token = parse_qs(parts.query)["token"][0]
    base = f"http://127.0.0.1:{parts.port}"
    kernel = json.loads(_request(f"{base}/api/kernels", token, "POST", {"name": "python3"}))["id"]
    session = secrets.token_hex(16)
    ws = _WebSocket(cast(int, parts.port), f"/api/kernels/{kernel}/channels?session_id={session}", token)
    msg_id = secrets.token_hex(16)
    header = {"msg_id": msg_id, "username": "qsandbox", "session": session, "msg_type": "execute_request"}
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    message = {"header": {**header, "version": "5.3"}, "parent_header": {}, "metadata": {}, "content": content}
    ws.send(json.dumps({**message, "channel": "shell", "buffers": []}).encode())
    printed, end = [], time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            raw = ws.receive()
            if raw is None:
                break
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, body = msg.get("msg_type"), msg.get("content", {})
            if kind == "stream":
                printed.append(body.get("text", ""))
            elif kind == "error":
                printed.append(f"{body.get('ename')}: {body.get('evalue')}\n")
            elif kind == "status" and body.get("execution_state") == "idle":
                break
    finally:
        ws.close()
    return "".join(printed)
