"""Runs inside the container as its PID 1: receive the hand-off, write the account into tmpfs, run the script.

    python -m qsandbox.inside.entry run SCRIPT [ARGS...]
    python -m qsandbox.inside.entry probe

The entry point is the sandbox's PID 1 (no docker-init: an init process runs as the same uid and is
dumpable, so the script could open its descriptors through /proc and hold or write the attach
stream) and makes itself non-dumpable first: the script, as the same uid without capabilities, can
then read nothing of it through /proc (its memory, its descriptors, its environment). It spawns the
script's interpreter at once (`qsandbox.inside.runner`, a fresh program, not a fork: nothing of this
process's memory is in it), which imports Qiskit while the launcher is still reading the key, and
waits for the start message on stdin. It writes qiskit-ibm-runtime's saved-account file into the
~/.qiskit tmpfs and the raw key into the /run/qsandbox tmpfs, unpacks the inputs, then tells the
runner to go. The runner's stdin is /dev/null and its stdout and stderr are pipes this process
reads, masks and frames: only this process ever holds the stream, and it speaks nothing but the
frames of common/mux.py on it (its own stderr carries only its own notes). With QSANDBOX_RELAY=1
(the sandbox has no network) it also serves the CONNECT proxy that is the sandbox's only way out
(inside/relay.py), each connection a channel of the stream that the launcher decides on.
EOF on stdin means the launcher is gone (killed, or its connection dropped): the entry point kills
the script's process group and exits, and with PID 1 every process of the sandbox dies and the
daemon removes the container (auto-remove). This is the dead-man switch; no helper container holds
the Docker socket. Silence on stdin for handoff.HEARTBEAT_TIMEOUT does the same: that is how a
sandbox learns the engine itself died.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import select
import signal
import sys
import tarfile
import threading
import time
from collections import deque

from ..common import handoff, mux
from ..common.handoff import HandoffError
from ..common.paths import CA_FILE, QISKIT_DIR, TOKEN_FILE, WORKDIR
from .transfer import send_output, unpack

TYPE_CHECKING = False  # not typing's: importing typing costs every run 3 ms (as in common/mux.py)
if TYPE_CHECKING:
    from .lab import Door, Manifest  # imported where used: only a lab needs them
    from .tokenserver import TokenServer  # imported where used: only short-lived mode needs it

GRACE = 5.0  # seconds between SIGINT and SIGKILL of the script on abort
CANCEL_LIMIT = 25.0  # seconds for the job clean-up's own process (inside/cancel.py keeps to 20)
ABORT_EXIT = {"interrupt": 130, "terminate": 143, "hangup": 129, "timeout": 124}
OOM_EXIT = 247  # errors.ExitCode.OOM: the memory limit killed the script
PR_SET_DUMPABLE = 4  # <linux/prctl.h>
# A fresh interpreter running one of our modules: `-c` puts '' (the cwd, /work, where the inputs
# are) first on sys.path, so it goes before anything is imported: a qsandbox/ among the inputs must
# not stand in for ours (the runner puts the script's directory back, as python does for a script).
_OURS = "import sys; sys.path[:] = [p for p in sys.path if p]; from qsandbox.inside.{} import main; main(sys.argv[1:])"
RUNNER = _OURS.format("runner")
CANCEL = _OURS.format("cancel")


def _oom_kills() -> int:
    """How many times the container's memory cgroup killed a process (cgroup v2, then v1)."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            with open(path, encoding="ascii") as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def _say(text: str) -> None:
    os.write(2, f"qsandbox-entry: {text}\n".encode())


def not_dumpable() -> None:
    """prctl(PR_SET_DUMPABLE, 0): /proc/<this pid>/{mem,fd,environ,...} become root's, and ptrace is
    refused, to every process of the same uid without CAP_SYS_PTRACE (the script). OSError if refused."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _Stdin:
    """The launcher's frames, read from fd 0 in large reads (one reader at a time)."""

    def __init__(self) -> None:
        self.decoder = mux.Decoder()
        self.pending: deque[mux.Frame] = deque()

    def next(self) -> mux.Frame | None:
        """The next frame; None at EOF. ProtocolError for a broken stream."""
        while not self.pending:
            data = os.read(0, 1 << 16)
            if not data:
                return None
            self.pending.extend(self.decoder.feed(data))
        return self.pending.popleft()


_STDIN = _Stdin()


class _Inputs:
    """The INPUTS channel as a file to read the tar stream from (until its EOF frame)."""

    def __init__(self, stdin: _Stdin) -> None:
        self.stdin, self.buf, self.done = stdin, b"", False

    def empty(self) -> bool:
        """Whether the channel ends before any data (no inputs at all)."""
        while not self.done and not self.buf:
            self._next()
        return self.done and not self.buf

    def drain(self) -> None:
        """Read to the channel's EOF (what is left after the archive's end is dropped)."""
        while not self.done:
            self._next()
        self.buf = b""

    def _next(self) -> None:
        f = self.stdin.next()
        if f is None:
            raise HandoffError("the launcher went away while sending the inputs")
        if f.channel != mux.INPUTS or f.type not in (mux.Type.DATA, mux.Type.EOF):
            raise HandoffError(f"unexpected {f.type.name} frame among the inputs")
        if f.type == mux.Type.EOF:
            self.done = True
        self.buf += f.payload

    def read(self, n: int = -1) -> bytes:
        while not self.done and (n < 0 or len(self.buf) < n):
            self._next()
        if n < 0:
            n = len(self.buf)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def _write_private(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)


def saved_account(start: handoff.Start) -> dict[str, dict[str, object]]:
    """What `QiskitRuntimeService.save_account(channel=, token=, instance=, set_as_default=True)`
    stores, built by hand: importing qiskit_ibm_runtime for it costs 2 s on every run.
    tests/unit/test_entry.py checks it against the installed client's own `to_saved_format()`.
    """
    account: dict[str, object] = {"channel": start.channel, "token": start.token}
    if start.instance:
        account["instance"] = start.instance
    account.update(url="https://cloud.ibm.com", verify=True, private_endpoint=False, is_default_account=True)
    name = "default-ibm-cloud" if start.channel == "ibm_cloud" else "default-ibm-quantum-platform"
    return {name: account}


def write_account(start: handoff.Start) -> None:
    """The saved-account file in the ~/.qiskit tmpfs, and the raw key in the /run/qsandbox tmpfs."""
    _write_private(str(QISKIT_DIR / "qiskit-ibm.json"), json.dumps(saved_account(start), sort_keys=True, indent=4))
    _write_private(str(TOKEN_FILE), start.token)
    if start.ca_pem:
        _write_private(str(CA_FILE), start.ca_pem)


class Script:
    """The script's interpreter (inside/runner.py), spawned before the key arrives and told to go
    once the account and inputs are in place. Its stdout and stderr (and the token pipe, when output
    is masked) come back through pipes that `_copy` passes on to our stdout and stderr.
    """

    def __init__(self, script: str, args: list[str], *, redact: bool) -> None:
        self.out, self.err, self.go = os.pipe(), os.pipe(), os.pipe()
        self.tok = os.pipe() if redact else None
        self.redact = redact
        tok_w = self.tok[1] if self.tok else -1
        for fd in (self.go[0], *((tok_w,) if self.tok else ())):
            os.set_inheritable(fd, True)
        if not os.path.isabs(script) and script != "-m":  # the runner takes it whole (it imports no paths)
            script = os.path.join(str(WORKDIR), script)
        # -c, not -m: `python -m` imports runpy and pkgutil (and typing through them) before the script.
        argv = [sys.executable, "-c", RUNNER, str(self.go[0]), str(tok_w), script, *args]
        self.pid = os.posix_spawn(
            sys.executable,
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, self.out[1], 1),
                (os.POSIX_SPAWN_DUP2, self.err[1], 2),
            ],
            setpgroup=0,  # its own group, so everything it starts can be killed at once
            setsigdef=(signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
        )
        for fd in (self.out[1], self.err[1], self.go[0], *((tok_w,) if self.tok else ())):
            os.close(fd)
        self._lock = threading.Lock()
        self._silenced = False
        from ..common.redact import Redactor

        self.redactors = {mux.STDOUT: Redactor([]), mux.STDERR: Redactor([])}
        self.thread = threading.Thread(target=self._copy, daemon=True)
        self.thread.start()

    def mask(self, secret: str) -> None:
        """Mask `secret` too in what the script prints (a lab's token: JupyterLab logs its URL). Called
        before `start`: the script has printed nothing yet."""
        for r in self.redactors.values():
            r.add(secret)

    def start(self) -> None:
        """The account is written and the inputs are in /work: run the script."""
        os.write(self.go[1], b"1")
        os.close(self.go[1])

    def cancel(self) -> None:
        """Nothing is to run: the runner sees EOF and exits."""
        os.close(self.go[1])

    def finish(self, timeout: float) -> None:
        """Pass on the rest of the script's output (its writers are dead by now), then nothing more:
        after this, not a byte of the script's reaches our stdout (the /output frame follows)."""
        self.thread.join(timeout)
        with self._lock:
            self._silenced = True

    def _copy(self) -> None:
        streams = {fd: (n, self.redactors[n]) for fd, n in ((self.out[0], mux.STDOUT), (self.err[0], mux.STDERR))}
        tok = self.tok[0] if self.tok else None
        if tok is not None:
            os.set_blocking(tok, False)
        pending = b""
        while streams:
            ready, _, _ = select.select([*streams, *([tok] if tok is not None else [])], [], [])
            # Tokens first, on every wake: one reported before the script printed it is known now.
            while tok is not None:
                try:
                    chunk = os.read(tok, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    tok = None
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    for _, r in streams.values():
                        r.add(line.decode(errors="replace"))
            for fd in ready:
                if fd not in streams:
                    continue
                target, r = streams[fd]
                read = os.read(fd, 65536)
                # The redactor may hold a whole chunk back (a trailing base64 run, once a token is
                # known): only the pipe's own EOF ends the stream, never an empty masked chunk.
                data = (r.feed(read) if read else r.flush()) if self.redact else read
                with self._lock:  # once silenced (/output is next), nothing more passes
                    if self._silenced:
                        return
                    try:
                        LINK.send(*mux.data_frames(target, data), *(() if read else (mux.frame(mux.Type.EOF, target),)))
                    except (_LauncherGone, OSError):
                        return  # the launcher is gone; the dead-man switch ends the rest
                if not read:
                    del streams[fd]


_GONE = threading.Event()  # the launcher is gone (EOF or silence): stop whatever we are doing


class _LauncherGone(OSError):
    """The launcher is gone: whoever was writing to it stops."""


def _watch_stdin(
    events: queue.Queue[tuple[str, str]],
    tokens: TokenServer | None,
    heard: list[float],
    channels: mux.Channels,
    door: Door | None = None,
) -> None:
    while True:
        try:
            f = _STDIN.next()
        except (OSError, mux.ProtocolError) as e:
            _say(f"the launcher's stream broke ({e}); stopping")
            f = None
        if f is None:
            _GONE.set()
            events.put(("eof", ""))
            return
        heard[0] = time.monotonic()
        if f.type != mux.Type.CONTROL:
            try:
                if f.type == mux.Type.OPEN:  # nothing in the sandbox is reachable from outside, but a lab
                    if channels.peer_opens(f.channel):
                        if door is not None:  # qsandbox lab: JupyterLab's port, and only it (inside/lab.py)
                            door.on_open(f.channel, f.payload)
                        else:
                            channels.refuse(f.channel, "nothing listens here")
                elif f.channel >= mux.FIRST_RELAY:
                    channels.dispatch(f)
            except mux.ProtocolError as e:
                _say(f"the launcher's stream broke ({e}); stopping")
                _GONE.set()
                events.put(("eof", ""))
                return
            except (_LauncherGone, OSError):
                pass
            continue
        try:
            msg = handoff.decode(f.payload)
        except handoff.HandoffError as e:
            _say(f"ignored a bad control message: {e}")
            continue
        if isinstance(msg, handoff.Abort):
            events.put(("abort", msg.reason))
        elif isinstance(msg, handoff.AccessToken) and tokens is not None:
            tokens.update(msg)


def _watch_silence(events: queue.Queue[tuple[str, str]], heard: list[float], timeout: float) -> None:
    """Second dead-man switch: no message (heartbeat or other) for `timeout` seconds."""
    while True:
        left = heard[0] + timeout - time.monotonic()
        if left <= 0:
            _GONE.set()
            events.put(("silent", ""))
            return
        time.sleep(min(left, 1.0))


def _kill_group(pid: int, first: signal.Signals, grace: float, done: threading.Event) -> None:
    try:
        os.killpg(pid, first)
    except ProcessLookupError:
        return
    if first != signal.SIGKILL and not done.wait(grace):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _control() -> object | None:
    """The next frame as a control message; None (said why) at EOF or for anything else."""
    try:
        f = _STDIN.next()
        if f is None:
            _say("the launcher went away before the hand-off; nothing was run")
            return None
        if f.type != mux.Type.CONTROL:
            _say(f"expected a control message, got {f.type.name}")
            return None
        return handoff.decode(f.payload)
    except (OSError, mux.ProtocolError, handoff.HandoffError) as e:
        _say(str(e))
        return None


def _receive() -> tuple[handoff.Start, TokenServer | None] | None:
    """The start message, the inputs and (short-lived mode) the first token; None (said why) if not."""
    msg = _control()
    if msg is None:
        return None
    if not isinstance(msg, handoff.Start):
        _say("expected a start message")
        return None
    write_account(msg)
    try:
        inputs = _Inputs(_STDIN)
        if not inputs.empty():  # a helper (the key broker) sends no inputs at all
            # A lab saves into /work: writable then, else read-only.
            unpack(inputs, writable=msg.lab_token is not None)  # type: ignore[arg-type]  # read() is all tarfile's stream mode uses
        inputs.drain()  # tar's end blocks leave the channel's EOF frame unread
    except (HandoffError, OSError, tarfile.TarError, mux.ProtocolError) as e:
        _say(f"the inputs could not be unpacked into {WORKDIR}: {e}; nothing was run")
        return None
    tokens: TokenServer | None = None
    if os.environ.get("QSANDBOX_TOKEN_MODE") == "short-lived":
        # The saved key is a placeholder; the next message is the minted access token.
        token = _control()
        if not isinstance(token, handoff.AccessToken):
            _say("short-lived mode: no access token arrived; nothing was run")
            return None
        from .tokenserver import TokenServer

        tokens = TokenServer(token)
    return msg, tokens


def run(script: str, args: list[str]) -> int:
    child = Script(script, args, redact=os.environ.get("QSANDBOX_REDACT", "1") == "1")
    received = _receive()
    if received is None:
        child.cancel()
        return 125
    start, tokens = received
    output = start.output
    lab: tuple[Manifest, str] | None = None  # qsandbox lab: what /work held, and the key (to mask what goes back)
    if start.lab_token is not None:
        from .lab import Manifest, write_token

        write_token(start.lab_token)
        child.mask(start.lab_token)
        lab = (Manifest(), start.token)
    del start, received
    channels = mux.Channels(LINK, opens_odd=True)
    door = None
    if lab is not None:
        from .lab import Door

        door = Door(channels, _GONE)
    server = None  # held for the run: its listening socket lives as long as this reference
    if os.environ.get("QSANDBOX_RELAY") == "1":
        from .relay import ConnectServer

        server = ConnectServer(channels)
        server.start()
    started_at = time.time()
    child.start()
    try:
        code, deliver = _supervise(child.pid, tokens, started_at, channels, door)
    finally:
        _kill_everything(child.pid)
        child.finish(5.0)  # the rest of its output, masked; then nothing more of it
        _forget_the_key()
        channels.close_all()
        del server
    if deliver and output and not _GONE.is_set():  # also after an error or an abort: what was written so far
        if lab is not None:  # what changed under /work goes back, masked, through /output
            from .lab import redactor_for, stage_changes

            stage_changes(lab[0], redactor_for(lab[1]), _say)
            lab = None
        try:
            send_output(lambda chunk: LINK.send(mux.frame(mux.Type.DATA, mux.OUTPUT, chunk)), _say)
            LINK.send(mux.frame(mux.Type.EOF, mux.OUTPUT))
        except (_LauncherGone, OSError):
            return 137
    return code


def _kill_everything(pid: int) -> None:
    """Every process of the sandbox but this one: the script's group, and whatever left it (setsid,
    double forks) and could otherwise write into the /output frame or outlive the script. As PID 1
    of the sandbox's PID namespace, kill(-1) reaches exactly those; elsewhere (not PID 1), the group."""
    try:
        if os.getpid() == 1:
            os.kill(-1, signal.SIGKILL)
        else:
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _forget_the_key() -> None:
    """The script has ended: the key, the account and the CA leave the tmpfs before /output goes out."""
    for path in (TOKEN_FILE, QISKIT_DIR / "qiskit-ibm.json", CA_FILE):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _frame_write(data: bytes) -> None:
    """Write (part of) a frame to the launcher; the launcher gone (EOF, silence, a failed write) ends it."""
    while data:
        if _GONE.is_set():
            raise _LauncherGone
        try:
            data = data[os.write(1, data) :]
        except OSError:
            raise _LauncherGone from None


LINK = mux.Link(_frame_write)  # every frame this process sends, whole, one writer at a time


def _supervise(
    pid: int, tokens: TokenServer | None, started_at: float, channels: mux.Channels, door: Door | None = None
) -> tuple[int, bool]:
    """Wait for the script's exit, an abort, EOF or silence. Returns the exit code, and whether the
    launcher is still there to receive /output."""
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    exited = threading.Event()
    status: list[int] = []

    def reap() -> None:
        # PID 1 adopts every orphan of the script: reap them all, and note the script's own status.
        while True:
            try:
                got, st = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.2)
                continue
            if got == pid:
                status.append(os.waitstatus_to_exitcode(st))
                exited.set()
                events.put(("exit", ""))

    # Signals reaching this process (docker stop, docker kill -s) take the abort path too.
    for sig, reason in ((signal.SIGTERM, "terminate"), (signal.SIGINT, "interrupt"), (signal.SIGHUP, "hangup")):
        signal.signal(sig, lambda *_a, r=reason: events.put(("abort", r)))

    if tokens is not None:
        tokens.start()
    threading.Thread(target=reap, daemon=True).start()
    heard = [time.monotonic()]
    threading.Thread(target=_watch_stdin, args=(events, tokens, heard, channels, door), daemon=True).start()
    threading.Thread(target=_watch_silence, args=(events, heard, handoff.HEARTBEAT_TIMEOUT), daemon=True).start()

    kind, reason = events.get()
    if kind == "exit":
        code = status[0]
        if code == -signal.SIGKILL and _oom_kills():
            _say("the script ran out of memory and was killed: raise the limit with --memory")
            return OOM_EXIT, True
        return (code if code >= 0 else 128 - code), True
    if kind in ("eof", "silent"):
        # Dead-man switch: the launcher is gone, or the engine between us. Nothing may outlive it.
        if kind == "silent":
            _say(
                f"no word from the launcher for {handoff.HEARTBEAT_TIMEOUT:.0f} s (it, or the engine, is gone): "
                "the script was stopped"
            )
        _kill_group(pid, signal.SIGKILL, 0, exited)
        exited.wait(2)
        return 137, False
    # abort: let the script see a KeyboardInterrupt first, then make sure.
    _kill_group(pid, signal.SIGINT, GRACE, exited)
    exited.wait(GRACE + 1)
    if os.environ.get("QSANDBOX_CANCEL_ON_ABORT", "1") == "1":
        _kill_everything(pid)  # nothing of the script's (a setsid daemon) may race the clean-up
        _cancel_jobs(started_at)
    return ABORT_EXIT[reason], True


def _cancel_jobs(started_at: float) -> None:
    """Cancel the run's Runtime jobs (inside/cancel.py) in a process of its own, not in this one:
    the client reads the saved account, which the script could rewrite (its own server, its own
    proxies), and parses what comes back. This process only passes on its lines, as its own notes."""
    out_r, out_w = os.pipe()
    argv = [sys.executable, "-c", CANCEL, repr(started_at)]
    child = os.posix_spawn(
        sys.executable,
        argv,
        os.environ,
        file_actions=[  # all it says (a warning of the client's too) becomes our notes, line by line
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, out_w, 2),
        ],
        setsigdef=(signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
    )
    os.close(out_w)
    deadline = time.monotonic() + CANCEL_LIMIT
    pending = b""
    with os.fdopen(out_r, "rb", buffering=0) as out:
        while (left := deadline - time.monotonic()) > 0 and select.select([out], [], [], left)[0]:
            chunk = out.read(4096)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                _say(line.decode(errors="replace")[:500])
        else:
            _say(f"job clean-up did not finish within {CANCEL_LIMIT:.0f} s; check your jobs on the platform")
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)  # done or over time; the reaper collects it


def no_imports_from_work() -> None:
    """`python -m` put the working directory, /work, first on sys.path. The inputs land there (and in
    a lab the kernel writes there), and this process imports more after they have: the job cancel on
    abort, the lab's and the token server's modules and what they import. None of it may come from
    /work: a file named like a module (datetime.py) would run inside PID 1, which holds the stream."""
    work, cwd = str(WORKDIR), os.getcwd()
    sys.path[:] = [p for p in sys.path if p and p not in (work, cwd) and not p.startswith(f"{work}/")]


def main(argv: list[str] | None = None) -> int:
    no_imports_from_work()  # /work is still empty: nothing was imported from there before this
    argv = list(sys.argv[1:] if argv is None else argv)
    # No core dump may hold the key, whatever the engine applied (Podman does not report ulimits):
    # a hard limit of 0 cannot be raised again without CAP_SYS_RESOURCE, which the sandbox lacks.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if argv[:1] == ["probe"]:
        from .probe import main as probe_main

        return probe_main()
    if len(argv) >= 2 and argv[0] == "run":
        try:
            not_dumpable()  # before anything the script could see exists
        except OSError as e:
            _say(f"could not make the entry point non-dumpable ({e.strerror}); nothing was run")
            return 125
        return run(argv[1], argv[2:])
    _say("usage: python -m qsandbox.inside.entry run SCRIPT [ARGS...] | probe")
    return 125


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: the container is removed the moment we return
