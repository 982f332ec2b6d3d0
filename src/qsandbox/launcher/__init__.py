"""The launcher: everything that runs on the user's machine, outside any container.

It holds the API key in memory (as a `credentials.Secret`), talks to the container engine with the
docker SDK, and never imports Qiskit. Nothing here writes the key to a file, an argument, an
environment or a log. The modules, in the order of one run:

- `cli` (the commands), `options` (the one option set and settings builder of run and batch),
  `config` (defaults from the lab's and the user's files, QSANDBOX_* variables), `units` (sizes,
  durations), `settings` (run settings, the one hardening spec);
- `credentials` (key sources), `engine` (connect, describe), `preflight` (the host's warnings),
  `image` (build, freshness), `offlinebase` (a base image without a registry), `deps` (images
  derived for a script's own dependencies);
- `transfer` (inputs out, /output in) and `inputs_policy` (what --workdir leaves out);
- `egress` (the allowlist), `relay` (the relay's authority), `stream` (the run's framed stream);
- `sandbox` (the container's lifecycle, every helper's `start_service`), `localplatform` (the
  emulator and its networks), `revoke` (the key broker), `terminal` (what reaches a terminal);
- `run` (one run as an object: check, prepare, hand off, supervise, tear down, confirm), `ending`
  (how it ended), `batch` (many runs), `report` (JSON and JUnit), `lab` (`qsandbox lab`: a run
  whose browser connections the launcher relays in, and whose work comes back into DIR);
- and beside the runs: `doctor`, `audit` (the leak search), `sweep` (leftovers).
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
