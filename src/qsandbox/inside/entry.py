"""Runs inside the container: receive the hand-off, write the account into tmpfs, run the script.

    python -m qsandbox.inside.entry run SCRIPT [ARGS...]
    python -m qsandbox.inside.entry probe

While the launcher is still reading the key, this process already imports qiskit and
qiskit_ibm_runtime, then waits for the start message on stdin. It writes qiskit-ibm-runtime's
saved-account file into the ~/.qiskit tmpfs and the raw key into the /run/qsandbox tmpfs, then forks:
the child runs the script in-process (the imports are already warm), the parent watches stdin.
EOF on stdin means the launcher is gone (killed, or its connection dropped): the parent kills the
script's process group and exits, and the daemon removes the container (auto-remove). This is the
dead-man switch; no helper container holds the Docker socket. Silence on stdin for
handoff.HEARTBEAT_TIMEOUT does the same: that is how a sandbox learns the engine itself died.
"""

from __future__ import annotations

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
from typing import TYPE_CHECKING, NoReturn

from ..common import handoff
from ..common.handoff import HandoffError
from ..common.paths import CA_FILE, QISKIT_DIR, TOKEN_FILE, WORKDIR
from .transfer import read_exactly, send_output, unpack

if TYPE_CHECKING:
    from .tokenserver import TokenServer  # imported where used: only short-lived mode needs it

GRACE = 5.0  # seconds between SIGINT and SIGKILL of the script on abort
ABORT_EXIT = {"interrupt": 130, "terminate": 143, "hangup": 129, "timeout": 124}
OOM_EXIT = 247  # errors.ExitCode.OOM: the memory limit killed the script


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


def _prewarm() -> None:
    """Import the Qiskit stack while the launcher waits for the user's key."""
    if os.environ.get("QSANDBOX_PREWARM", "0") != "1":
        return
    try:
        import qiskit  # type: ignore[import-untyped]  # noqa: F401 - no py.typed
        import qiskit_ibm_runtime  # type: ignore[import-untyped]  # noqa: F401 - no py.typed
    except Exception as e:  # noqa: BLE001 - the script will report the same error properly
        _say(f"pre-import failed ({type(e).__name__}); continuing")


def _read_line(fd: int) -> bytes | None:
    """One line from fd, unbuffered (the rest of the stream stays for the watcher). None on EOF."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > handoff.MAX_MESSAGE:
            raise handoff.HandoffError("hand-off message too large")
    return bytes(buf)


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


def _hint_missing_input(e: BaseException) -> None:
    """A data file next to the script is not sent in unless named: say how, once."""
    if not isinstance(e, FileNotFoundError) or not isinstance(e.filename, str):
        return
    path = os.path.normpath(os.path.join(os.getcwd(), e.filename))
    if path == str(WORKDIR) or path.startswith(f"{WORKDIR}/"):
        print(
            f"qsandbox: {path} is not in the sandbox: only the script is sent in; name what it needs "
            "with --include PATH (relative to the script's directory), or send a project with --workdir DIR",
            file=sys.stderr,
        )


def _run_script(script: str, args: list[str]) -> NoReturn:
    """In the forked child: become the script, as `python SCRIPT ARGS` would."""
    import runpy
    import traceback

    os.setpgid(0, 0)  # its own group, so the parent can kill everything it starts
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the hand-off stream belongs to the parent
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0, now /dev/null
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(script)
    code = 0
    try:
        if script.endswith(".ipynb"):
            from .notebook import run as run_notebook

            code = run_notebook(script)
        else:
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException as e:  # noqa: BLE001 - report like the interpreter does
        traceback.print_exc()
        _hint_missing_input(e)
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001, S110 - closed streams at exit are not our error
            pass
    os._exit(code)


def _watch_stdin(events: queue.Queue[tuple[str, str]], tokens: TokenServer | None, heard: list[float]) -> None:
    while True:
        try:
            line = _read_line(0)
        except (OSError, handoff.HandoffError):
            line = None
        if line is None:
            events.put(("eof", ""))
            return
        heard[0] = time.monotonic()
        try:
            msg = handoff.decode(line)
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
            events.put(("silent", ""))
            return
        time.sleep(min(left, 1.0))


class _Output:
    """The script's stdout and stderr pass through pipes, so that the IAM tokens its client obtains
    (reported by tokenwatch on a third pipe) are masked before the output leaves the sandbox. The
    launcher masks the key and anything JWT-shaped again on its side.
    """

    def __init__(self) -> None:
        self.out, self.err, self.tok = os.pipe(), os.pipe(), os.pipe()
        self.thread: threading.Thread | None = None

    def child(self) -> None:
        os.dup2(self.out[1], 1)
        os.dup2(self.err[1], 2)
        for fd in (*self.out, *self.err, self.tok[0]):
            os.close(fd)
        from .tokenwatch import install

        install(self.tok[1])
        os.environ["QSANDBOX_TOKEN_FD"] = str(self.tok[1])  # a notebook's kernel watches on it too

    def start(self) -> None:
        for fd in (self.out[1], self.err[1], self.tok[1]):
            os.close(fd)
        os.set_blocking(self.tok[0], False)
        self.thread = threading.Thread(target=self._copy, daemon=True)
        self.thread.start()

    def finish(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def _copy(self) -> None:
        from ..common.redact import Redactor

        streams = {self.out[0]: (1, Redactor([])), self.err[0]: (2, Redactor([]))}
        pending = b""
        tok_open = True
        while streams:
            ready, _, _ = select.select([*streams, *([self.tok[0]] if tok_open else [])], [], [])
            # Tokens first, on every wake: one reported before the script printed it is known now.
            while tok_open:
                try:
                    chunk = os.read(self.tok[0], 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    tok_open = False
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    for _, r in streams.values():
                        r.add(line.decode(errors="replace"))
            for fd in ready:
                if fd not in streams:
                    continue
                target, r = streams[fd]
                data = os.read(fd, 65536)
                _write_all(target, r.feed(data) if data else r.flush())
                if not data:
                    del streams[fd]


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data) :]
        except OSError:
            return  # the launcher is gone; the dead-man switch ends the rest


def _kill_group(pid: int, first: signal.Signals, grace: float, done: threading.Event) -> None:
    try:
        os.killpg(pid, first)
    except ProcessLookupError:
        return
    if first != signal.SIGKILL and not done.wait(grace):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run(script: str, args: list[str]) -> int:
    _prewarm()
    try:
        line = _read_line(0)
    except handoff.HandoffError as e:
        _say(str(e))
        return 125
    if line is None:
        _say("the launcher went away before the hand-off; nothing was run")
        return 125
    msg = handoff.decode(line)
    if not isinstance(msg, handoff.Start):
        _say("expected a start message")
        return 125
    write_account(msg)
    marker = msg.output_marker
    try:
        unpack(read_exactly(0, msg.inputs_size))
    except (HandoffError, OSError, tarfile.TarError) as e:
        _say(f"the inputs could not be unpacked into {WORKDIR}: {e}; nothing was run")
        return 125
    started_at = time.time()
    del msg, line
    tokens: TokenServer | None = None
    if os.environ.get("QSANDBOX_TOKEN_MODE") == "short-lived":
        # The saved key is a placeholder; the next message is the minted access token.
        first = _read_line(0)
        token = handoff.decode(first) if first else None
        if not isinstance(token, handoff.AccessToken):
            _say("short-lived mode: no access token arrived; nothing was run")
            return 125
        from .tokenserver import TokenServer

        tokens = TokenServer(token)
        del first, token

    sys.stdout.flush()
    sys.stderr.flush()
    output = _Output() if os.environ.get("QSANDBOX_REDACT", "1") == "1" else None
    pid = os.fork()
    if pid == 0:
        if output is not None:
            output.child()
        _run_script(os.path.join(str(WORKDIR), script) if not os.path.isabs(script) else script, args)
    if output is not None:
        output.start()
    try:
        code, deliver = _supervise(pid, tokens, started_at)
    finally:
        try:  # whatever the script left running would die with the container anyway
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if output is not None:
            output.finish(2.0)  # the rest of its output, masked
    if deliver and marker:  # also after an error or an abort: whatever was written so far
        send_output(marker, lambda data: _write_all(1, data), _say)
    return code


def _supervise(pid: int, tokens: TokenServer | None, started_at: float) -> tuple[int, bool]:
    """In the parent: wait for the script's exit, an abort, EOF or silence. Returns the exit code,
    and whether the launcher is still there to receive /output."""
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    exited = threading.Event()
    status: list[int] = []

    def reap() -> None:
        _, st = os.waitpid(pid, 0)
        status.append(os.waitstatus_to_exitcode(st))
        exited.set()
        events.put(("exit", ""))

    # Signals reaching this process (docker stop, tini forwarding) take the abort path too.
    for sig, reason in ((signal.SIGTERM, "terminate"), (signal.SIGINT, "interrupt"), (signal.SIGHUP, "hangup")):
        signal.signal(sig, lambda *_a, r=reason: events.put(("abort", r)))

    if tokens is not None:
        tokens.start()
    threading.Thread(target=reap, daemon=True).start()
    heard = [time.monotonic()]
    threading.Thread(target=_watch_stdin, args=(events, tokens, heard), daemon=True).start()
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
        from .cancel import cancel_jobs_since

        cancel_jobs_since(started_at, say=_say)
    return ABORT_EXIT[reason], True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No core dump may hold the key, whatever the engine applied (Podman does not report ulimits):
    # a hard limit of 0 cannot be raised again without CAP_SYS_RESOURCE, which the sandbox lacks.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if argv[:1] == ["probe"]:
        from .probe import main as probe_main

        return probe_main()
    if len(argv) >= 2 and argv[0] == "run":
        return run(argv[1], argv[2:])
    _say("usage: python -m qsandbox.inside.entry run SCRIPT [ARGS...] | probe")
    return 125


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: the container is removed the moment we return
