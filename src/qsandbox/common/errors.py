"""One exception base, subclasses that say what to do, and every exit code in one IntEnum.

The CLI catches only QsandboxError and prints its message as one line; anything else is a bug and
keeps its traceback. Each message says what is wrong and what to do next.

Exit 2 or 125? 2 means nothing was started and trying again unchanged gives the same answer: bad
input, or a refusal whose message names the remedy (an option to add, an image to build, an engine
to set up). 125 means qsandbox or the engine failed at something it should have been able to do. A
CI job may retry on 125; it must never retry on 2.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit codes of the launcher. A script's own exit code is passed through unchanged."""

    OK = 0
    FAILURE = 1
    USAGE = 2  # nothing was started: bad input, or a refusal that names its remedy
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
    """Raised when no container engine answers, or this user may not use the one that is there."""


class ImageError(QsandboxError):
    """Raised when the sandbox image cannot be built or used; a missing or outdated one is ImageMissing."""


class ImageMissing(ImageError):
    """Raised before anything starts when the engine lacks the image for this qsandbox version
    (none at all, or only one built for another version); the remedy is `qsandbox build`."""

    exit_code = ExitCode.USAGE


class ImageRefused(ImageError):
    """Raised before anything starts when `--image` names an image not built FROM this version's
    qsandbox image (its qsandbox.version label) or with another entry point; the message says which."""

    exit_code = ExitCode.USAGE


class HardeningMismatch(QsandboxError):
    """Raised when the engine reports a container setting other than the one requested.

    The container is destroyed before any key is sent, so nothing ran: a refusal, exit 2.
    """

    exit_code = ExitCode.USAGE


class SandboxError(QsandboxError):
    """Raised when the engine fails while creating, running or destroying a sandbox."""


class PreflightRefused(QsandboxError):
    """Raised before anything starts when the run cannot be as safe as asked: --strict and a
    preflight warning (swap, debug engine, shared engine access), limits this engine cannot apply
    without --allow-no-limits, or an engine the chosen --platform does not support."""

    exit_code = ExitCode.USAGE


class PlatformNotRunning(QsandboxError):
    """Raised before anything starts by `--platform shared` when `qsandbox platform up` has not
    been run (or its emulator is gone)."""

    exit_code = ExitCode.USAGE
