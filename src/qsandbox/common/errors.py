"""One exception base, subclasses that say what to do, and every exit code in one IntEnum.

The CLI catches only QsandboxError and prints its message as one line; anything else is a bug and
keeps its traceback. Each message says what is wrong and what to do next.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit codes of the launcher. A script's own exit code is passed through unchanged."""

    OK = 0
    FAILURE = 1
    USAGE = 2  # bad input: no key source, malformed key, bad option
    OOM = 247  # the script hit the memory limit (set by the entry point inside the sandbox)
    TIMEOUT = 124  # --timeout elapsed (the `timeout` command's convention)
    TOOL = 125  # qsandbox or the engine failed (the `docker run` convention)
    SIGHUP = 129
    SIGINT = 130
    SIGTERM = 143


class QsandboxError(Exception):
    """Base of every error qsandbox reports to the user as one line."""

    exit_code: ExitCode = ExitCode.TOOL


class UsageError(QsandboxError):
    """Raised for bad input the user can fix: a missing or malformed key, a bad path or option."""

    exit_code = ExitCode.USAGE


class EngineUnavailable(QsandboxError):
    """Raised when no container engine answers."""


class ImageError(QsandboxError):
    """Raised when the sandbox image is missing, outdated, or cannot be built."""


class HardeningMismatch(QsandboxError):
    """Raised when the engine reports a container setting other than the one requested.

    The key is never sent into such a container.
    """


class SandboxError(QsandboxError):
    """Raised when the engine fails while creating, running or destroying a sandbox."""


class PreflightRefused(QsandboxError):
    """Raised under --strict when a preflight check warns (swap, debug engine, shared engine access)."""
