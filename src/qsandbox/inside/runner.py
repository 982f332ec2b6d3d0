"""The script's own interpreter: a fresh `python -c RUNNER GO_FD TOKEN_FD SCRIPT [ARGS...]` (entry.RUNNER
calls `main`; SCRIPT: an absolute path, or `-m` and a module).

The entry point (PID 1 of the sandbox, made non-dumpable) spawns this process before the key
arrives, so Qiskit's imports warm up while the user types it (QSANDBOX_PREWARM). It is a new
program, not a fork of the entry point: nothing of the entry's memory (the run's output marker, the
hand-off stream's state) is in it, and it holds none of the entry's descriptors. Its stdin is
/dev/null; stdout and stderr are pipes the entry point reads, masks and frames; GO_FD is a pipe
that carries one byte when the account is written and the inputs are in /work (EOF instead:
nothing is run); TOKEN_FD (-1 when output is not masked) is where the IAM tokens its client obtains
are reported (tokenwatch).
"""

from __future__ import annotations

import os
import sys

# What this process imports, every script pays for before its first line: only os and sys here
# (typing, pathlib and traceback cost a no-op run more than the script itself; bench/bench.py's batch).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


def _prewarm() -> None:
    """Import the Qiskit stack while the launcher waits for the user's key."""
    if os.environ.get("QSANDBOX_PREWARM", "0") != "1":
        return
    try:
        import qiskit  # type: ignore[import-untyped]  # noqa: F401 - no py.typed
        import qiskit_ibm_runtime  # type: ignore[import-untyped]  # noqa: F401 - no py.typed
    except Exception as e:  # noqa: BLE001 - the script will report the same error properly
        os.write(2, f"qsandbox-entry: pre-import failed ({type(e).__name__}); continuing\n".encode())


def _hint_missing_input(e: BaseException) -> None:
    """A data file next to the script is not sent in unless named: say how, once."""
    if not isinstance(e, FileNotFoundError) or not isinstance(e.filename, str):
        return
    from ..common.paths import WORKDIR

    path = os.path.normpath(os.path.join(os.getcwd(), e.filename))
    if path == str(WORKDIR) or path.startswith(f"{WORKDIR}/"):
        print(
            f"qsandbox: {path} is not in the sandbox: only the script is sent in; name what it needs "
            "with --include PATH (relative to the script's directory), or send a project with --workdir DIR",
            file=sys.stderr,
        )


def _run_path(path: str) -> None:
    """What `python SCRIPT` does with SCRIPT: its source compiled on its own (no future import of
    ours leaks into it), run as a fresh module `__main__`. By hand rather than runpy.run_path, whose
    pkgutil import (and typing through it) cost a no-op run more than the script does."""
    import builtins
    import importlib.machinery
    import types

    with open(path, "rb") as f:  # bytes: compile honours a coding cookie and a BOM, as python does
        code = compile(f.read(), path, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    main.__cached__ = None  # type: ignore[attr-defined]  # set as python sets it for a script
    # The module, as in python's own __main__ (exec alone would put in the module's dict).
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = main  # pickle and multiprocessing look the script's classes up here
    exec(code, main.__dict__)  # noqa: S102 - running the user's script is this process's purpose


def _print_exception(e: BaseException) -> None:
    """As the interpreter prints it: without this module's own frames."""
    import traceback

    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_globals is globals():
        tb = tb.tb_next
    traceback.print_exception(type(e), e, tb)


def run_script(script: str, args: list[str]) -> int:
    """Become the script, as `python SCRIPT ARGS` would; returns its exit code."""
    sys.argv = [script, *args]
    if script != "-m":  # python puts a script's directory first; our own -m helpers need none
        sys.path.insert(0, os.path.dirname(script))
    code = 0
    try:
        if script == "-m":  # one of qsandbox's own helpers (the key broker): `run -m MODULE ARGS`
            import runpy

            sys.argv = args
            runpy.run_module(args[0], run_name="__main__", alter_sys=True)
        elif script.endswith(".ipynb"):
            from .notebook import run as run_notebook

            code = run_notebook(script)
        else:
            _run_path(script)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException as e:  # noqa: BLE001 - report like the interpreter does
        _print_exception(e)
        _hint_missing_input(e)
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001, S110 - closed streams at exit are not our error
            pass
    return code


def main(argv: list[str]) -> NoReturn:
    go, tok, script, args = int(argv[0]), int(argv[1]), argv[2], argv[3:]
    _prewarm()
    if os.read(go, 1) != b"1":  # the entry point refused the hand-off, or is gone: run nothing
        os._exit(125)
    os.close(go)
    if tok >= 0:
        from .tokenwatch import install

        install(tok)
        os.environ["QSANDBOX_TOKEN_FD"] = str(tok)  # a notebook's kernel watches on it too
    os._exit(run_script(script, args))
