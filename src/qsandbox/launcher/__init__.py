"""The launcher: everything that runs on the user's machine, outside any container.

It holds the API key in memory (as a `core.credentials.Secret`), talks to the container engine with
the docker SDK, and never imports Qiskit. Nothing here writes the key to a file, an argument, an
environment or a log. Its sub-packages are layers, each importing only those below it (an
import-linter `layers` contract in pyproject.toml fails CI otherwise):

- `cli`: the commands, their one option set, and the defaults from config files;
- `checks`: beside the runs: the doctor, the leak search (audit) and sweep;
- `run`: one run's story and everything it is made of (plans, the hand-off, the relay, files,
  reports, batches, and `qsandbox lab`);
- `engine`: the container engine: connect and describe, preflight, the image, the sandbox's and
  every helper's container lifecycle, the emulator and its networks, derived images;
- `core`: what every layer above shares: the user's settings and their units, the one hardening
  spec, a script's needs, and the key's sources.
"""

import importlib
import sys
import types


def _defer_paramiko() -> None:
    """`import docker` imports paramiko (its ssh:// transport), 0.12 s of every run's CPU, though
    ssh:// engines are reached with the `ssh` command by default (engine.ssh_client_mode) and a local
    engine never needs it. A stand-in module takes its place in sys.modules: the real paramiko is
    imported at the first use of one of its names (QSANDBOX_SSH_CLIENT=0), and if it is not
    installed (it is the optional extra `qsandbox[paramiko]`), that use says what to install.
    (importlib's LazyLoader does not do: `import paramiko` itself reads `__spec__`, which loads it.)"""
    if "paramiko" in sys.modules:
        return
    stand_in = types.ModuleType("paramiko", "imported at first use (qsandbox.launcher._defer_paramiko)")

    def first_use(name: str) -> object:
        if sys.modules.get("paramiko") is stand_in:
            del sys.modules["paramiko"]
        try:
            real = importlib.import_module("paramiko")
        except ImportError:
            sys.modules["paramiko"] = stand_in
            raise ImportError(
                "Install paramiko package to enable ssh:// support with QSANDBOX_SSH_CLIENT=0: "
                "pip install 'qsandbox[paramiko]' (or leave QSANDBOX_SSH_CLIENT unset: the ssh command is used)"
            ) from None
        return getattr(real, name)

    stand_in.__getattr__ = first_use  # type: ignore[method-assign]  # a module's __getattr__ (PEP 562)
    sys.modules["paramiko"] = stand_in


_defer_paramiko()
