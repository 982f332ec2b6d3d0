"""Reading the API key from its sources, into a Secret that never prints itself.

Sources, in this order (the first one given wins; giving two is an error):

1. ``--token-stdin``: the first line of standard input (like ``docker login --password-stdin``);
2. ``--token-file PATH``: a CI secret file, or ``/dev/fd/N``;
3. ``--token-env NAME``: that environment variable, which is then removed from the launcher's
   environment so nothing it starts inherits it;
4. ``--token-command CMD``: a credential helper; its stdout (one line) is the key;
5. otherwise, on a terminal: a hidden prompt. No source and no terminal: UsageError (exit 2).

The key is never a command-line value (shell history, ``ps``), and it is held in memory only.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ...common.errors import UsageError

MIN_LENGTH = 16
MAX_LENGTH = 512  # IBM Cloud API keys are 44 characters; anything near this limit is not a key


class Secret:
    """Holds a key. repr/str/format show where it came from, never the value."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        """The value, for the one place that sends it into the sandbox."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret(source={self.source!r}, value=<hidden>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def validate(value: str, source: str) -> Secret:
    """Strip one trailing newline, then refuse what cannot be a key. Messages never echo it."""
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise UsageError(f"the API key from {source} is empty: give a non-empty key")
    if len(value) > MAX_LENGTH:
        raise UsageError(
            f"the API key from {source} is {len(value)} characters long: an IBM Cloud API key is 44; "
            "check that the source holds only the key"
        )
    if len(value) < MIN_LENGTH:
        raise UsageError(f"the API key from {source} is only {len(value)} characters long: check the source")
    if any(c.isspace() for c in value):
        raise UsageError(f"the API key from {source} contains whitespace: give the key alone, on one line")
    if any(not c.isprintable() or ord(c) > 126 for c in value):
        raise UsageError(f"the API key from {source} contains control or non-ASCII characters: check the source")
    return Secret(value, source)


@dataclass(frozen=True, kw_only=True)
class KeySource:
    """Which source the user chose. Built from the CLI options; holds no secret itself."""

    stdin: bool = False
    file: str | None = None
    env: str | None = None
    command: str | None = None

    def chosen(self) -> list[str]:
        names = []
        if self.stdin:
            names.append("--token-stdin")
        if self.file is not None:
            names.append("--token-file")
        if self.env is not None:
            names.append("--token-env")
        if self.command is not None:
            names.append("--token-command")
        return names

    def check(self) -> None:
        """Fail before anything starts if the choice itself is wrong."""
        chosen = self.chosen()
        if len(chosen) > 1:
            raise UsageError(f"give one key source, not {' and '.join(chosen)}")
        if not chosen and not sys.stdin.isatty():
            raise UsageError(
                "no API key source and no terminal to prompt on: use --token-stdin, "
                "--token-file PATH, --token-env NAME or --token-command CMD"
            )

    @property
    def interactive(self) -> bool:
        return not self.chosen()

    def read(self, prompt: Callable[[], str] | None = None) -> Secret:
        """Read and validate the key from the chosen source."""
        self.check()
        if self.stdin:
            return validate(sys.stdin.readline(), "standard input")
        if self.file is not None:
            return validate(_read_file(self.file), f"file {self.file}")
        if self.env is not None:
            return _read_env(self.env)
        if self.command is not None:
            return validate(_run_helper(self.command), "the --token-command helper")
        return validate((prompt or _prompt)(), "the prompt")


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_LENGTH + 2)
    except OSError as e:
        raise UsageError(f"cannot read the key file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"the key file {path} is not text: give a file holding only the key") from None
    return text  # validate() strips the one trailing newline; more lines are refused there


def _read_env(name: str) -> Secret:
    value = os.environ.pop(name, None)  # popped: nothing the launcher starts inherits it
    _scrub_initial_environ(name)
    if value is None:
        raise UsageError(f"environment variable {name} is not set: export it or choose another source")
    return validate(value, f"environment variable {name}")


def _scrub_initial_environ(name: str) -> None:
    """Overwrite NAME's value in the process's original environment block.

    os.environ.pop stops children inheriting it, but /proc/PID/environ shows the block the process
    started with, for as long as it runs. Zeroing the bytes in place makes that show nothing.
    """
    if sys.platform != "linux":
        return
    prefix = name.encode() + b"="
    with open("/proc/self/stat", "rb") as f:  # proc(5): fields 50 and 51 are env_start, env_end
        fields = f.read().rsplit(b")", 1)[1].split()  # fields[0] is field 3
    start, end = int(fields[47]), int(fields[48])
    # The original block: scan it directly (unsetenv only unlinks the pointer from `environ`).
    size = end - start
    block = ctypes.string_at(start, size)
    pos = 0
    while pos < size:
        nul = block.find(b"\0", pos)
        nul = size if nul < 0 else nul
        if block.startswith(prefix, pos):
            ctypes.memset(start + pos + len(prefix), 0, nul - pos - len(prefix))
        pos = nul + 1


def _run_helper(command: str) -> str:
    """The first line of the credential helper's stdout: the key, as --token-stdin's first line is
    (`pass show ibm/quantum` prints the key, then the entry's other lines)."""
    argv = shlex.split(command)
    if not argv:
        raise UsageError("--token-command is empty: give a command that prints the key")
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120, check=False)
    except FileNotFoundError:
        raise UsageError(f"--token-command: {argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise UsageError("--token-command did not finish within 120 s") from None
    if done.returncode != 0:
        raise UsageError(f"--token-command exited with {done.returncode}: it printed no key")
    try:
        out = done.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("--token-command printed something that is not text") from None
    return out.split("\n", 1)[0]


def _prompt() -> str:
    import getpass

    return getpass.getpass("IBM Quantum API key (input hidden): ")


def harden_process() -> None:
    """No core dumps of the launcher, and no ptrace or /proc/PID/mem reads by the same user.

    On Linux it fails closed: if prctl(PR_SET_DUMPABLE, 0) fails, or PR_GET_DUMPABLE does not read
    back 0, the launcher says why and exits 125 before any key is read (another process of the
    user could read the key from its memory). Elsewhere only the core-dump limit applies.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform != "linux":
        return
    pr_get_dumpable, pr_set_dumpable = 3, 4
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_SET_DUMPABLE, 0): {os.strerror(ctypes.get_errno())}")
        state = libc.prctl(pr_get_dumpable, 0, 0, 0, 0)
        if state != 0:
            raise OSError(0, f"PR_GET_DUMPABLE reads {state} after PR_SET_DUMPABLE 0")
    except (OSError, AttributeError) as e:  # AttributeError: no prctl symbol (a static Python)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(  # noqa: T201 - before the CLI's error handling: it must stop here, whatever the command
            f"qsandbox: cannot make the launcher non-dumpable ({reason}): another process of this user "
            "could read the key from its memory; refusing to read the key",
            file=sys.stderr,
        )
        raise SystemExit(125) from None
