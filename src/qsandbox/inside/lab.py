"""The entry point's half of `qsandbox lab` (PID 1; JupyterLab itself is `inside/jupyter.py`).

A lab is a run whose start message carries `lab_token`. Then, in the entry point:

- the inputs are unpacked writable (JupyterLab saves into /work), and `Manifest` notes what each
  file held when it arrived;
- the token goes to JupyterLab in a file of the /run/qsandbox tmpfs (`write_token`), which it reads
  and removes: never an argument, never an environment variable;
- `Door` answers the launcher's channels (each a browser connection the launcher accepted on the
  host's loopback): the only target it connects is LAB_TARGET, JupyterLab's port on the sandbox's
  loopback; any other is refused. Nothing else in the sandbox is reachable from outside, and
  nothing inside can make the launcher open a channel: only the launcher opens even ids, and it
  opens one only for a connection it accepted;
- when JupyterLab has ended and every other process of the sandbox is dead, `stage_changes` copies
  what is new or changed under /work into the (emptied) /output tmpfs, masked (the key in its
  forms, anything JWT-shaped, the IAM tokens the kernels' clients reported; a notebook masked as a
  viewer shows it, as for `qsandbox run NOTEBOOK`), and the usual /output stream carries it back.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable

from ..common import mux
from ..common.paths import LAB_PORT, LAB_TARGET, LAB_TOKEN_FILE, OUTPUT_DIR, WORKDIR
from ..common.redact import Redactor
from ..common.text import shown

READY_WAIT = 120.0  # a browser's first connection may come while JupyterLab still starts
# The IAM tokens the lab's kernels obtained, one a line (a file of the sandbox's /tmp tmpfs).
TOKEN_LOG = "/tmp/qsandbox-jupyter/tokens"  # noqa: S105, S108 - a path, in the sandbox's own tmpfs
# Jupyter's own working files under /work: never sent back.
SKIPPED = frozenset({".ipynb_checkpoints", "__pycache__", ".virtual_documents"})
MAX_TOKEN_LOG = 1 << 20
RUNTIME = "/tmp/qsandbox-jupyter/runtime"  # noqa: S108 - JupyterLab's runtime directory (inside/jupyter.py)


def write_token(token: str) -> None:
    """JupyterLab's token, for inside/jupyter.py to read (and remove) before it serves anything."""
    fd = os.open(str(LAB_TOKEN_FILE), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token)


def serving() -> bool:
    """JupyterLab serves: its server info file is written once its real socket listens. Before that,
    a connection can land in the backlog of the probe socket jupyter_server binds, listens on and
    closes to find its port (ServerApp._find_http_port), and be reset unanswered."""
    try:
        return any(n.startswith("jpserver-") and n.endswith(".json") for n in os.listdir(RUNTIME))
    except OSError:
        return False


class Door:
    """The launcher's channels into the sandbox: each connected to JupyterLab's port, nothing else."""

    def __init__(self, channels: mux.Channels, gone: threading.Event) -> None:
        self.channels, self.gone = channels, gone

    def on_open(self, ident: int, target: bytes) -> None:
        """An OPEN the stream's reader accepted (`peer_opens`); never blocks the reader."""
        if target != LAB_TARGET.encode():
            self.channels.refuse(ident, f"refused: only the lab ({LAB_TARGET}) is reachable from outside")
            return
        try:
            threading.Thread(target=self._connect, args=(ident,), daemon=True, name=f"lab-{ident}").start()
        except RuntimeError:  # no thread to be had (the pids limit)
            self.channels.refuse(ident, "no room for another connection")

    def _connect(self, ident: int) -> None:
        end = time.monotonic() + READY_WAIT
        while True:
            try:
                if not serving():
                    raise OSError("JupyterLab is still starting")
                sock = socket.create_connection(("127.0.0.1", LAB_PORT), timeout=5)
                break
            except OSError:
                if self.gone.is_set() or time.monotonic() > end:
                    with contextlib.suppress(OSError):
                        self.channels.refuse(ident, "the lab is not listening")
                    return
                time.sleep(0.25)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            ch = self.channels.accepted(ident, sock)
        except OSError:
            ch = None
        if ch is None:
            sock.close()
            return
        try:
            ch.start()
        except RuntimeError:
            ch.abort()


def _walk(top: str) -> list[tuple[str, str]]:
    """(path, name relative to top) of every regular file below `top`, links never followed,
    Jupyter's own working directories left out."""
    found, stack = [], [(top, "")]
    while stack:
        path, prefix = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            if e.name in SKIPPED:
                continue
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                stack.append((e.path, f"{prefix}{e.name}/"))
            elif stat.S_ISREG(st.st_mode):
                found.append((e.path, prefix + e.name))
    return found


def _digest(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Manifest:
    """What each file of /work held when it arrived (its digest), to send back only what changed."""

    def __init__(self, top: str = str(WORKDIR)) -> None:
        self.top = top
        self.before = {name: _digest(path) for path, name in _walk(top)}

    def changed(self) -> list[tuple[str, str]]:
        """(path, name) of every file that is new or whose content changed since it arrived."""
        return [(p, n) for p, n in _walk(self.top) if n not in self.before or _digest(p) != self.before[n]]


def _empty(top: str) -> None:
    with os.scandir(top) as it:
        for e in list(it):
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(e.path)


def redactor_for(key: str | None) -> Redactor:
    """The key's forms, anything JWT-shaped, and the IAM tokens the lab's kernels reported."""
    redactor = Redactor([key] if key else [])
    with contextlib.suppress(OSError):
        fd = os.open(TOKEN_LOG, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            for line in f.read(MAX_TOKEN_LOG).splitlines():
                redactor.add(line.decode(errors="replace").strip())
    return redactor


def stage_changes(manifest: Manifest, redactor: Redactor, say: Callable[[str], None]) -> int:
    """Copy what changed under /work into the emptied /output, masked; returns how many files.
    Called when nothing else runs in the sandbox (every other process killed)."""
    out = str(OUTPUT_DIR)
    _empty(out)
    count = 0
    changed = manifest.changed()
    for i, (path, name) in enumerate(changed):
        dest = os.path.join(out, *name.split("/"))
        try:
            os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as src, open(dest, "xb") as dst:
                if name.endswith(".ipynb"):
                    dst.write(_masked_notebook(src.read(), redactor))
                else:
                    while chunk := src.read(1 << 20):
                        dst.write(redactor.feed(chunk))
                    dst.write(redactor.flush())
            count += 1
        except OSError as e:
            say(f"/work/{shown(name)} could not be sent back ({e.strerror}); left out")
            with contextlib.suppress(OSError):
                os.unlink(dest)  # what was cut short would come back as if whole
            if e.errno in (errno.ENOSPC, errno.EDQUOT):  # /output is full: the rest cannot go either
                if len(changed) - i - 1:
                    say(f"{len(changed) - i - 1} more changed file(s) under /work left out (raise --output-limit)")
                break
    return count


def _masked_notebook(data: bytes, redactor: Redactor) -> bytes:
    """A notebook masked as a viewer shows it (inside/notebook.py); bytes masked plainly if it is not JSON."""
    from .notebook import masked

    try:
        nb = json.loads(data)
    except ValueError:
        return redactor.feed(data) + redactor.flush()
    return (json.dumps(masked(nb, redactor), indent=1, ensure_ascii=False) + "\n").encode()
