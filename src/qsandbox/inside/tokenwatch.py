"""Inside the sandbox, in the script's process: report every IAM token its client obtains.

Real IAM refresh tokens are opaque, so no pattern finds them in output; only knowing them does.
`install(fd)` wraps the IAM token manager of ibm-cloud-sdk-core (which qiskit-ibm-runtime's
client uses) so that each access and refresh token it saves is written, one per line, to `fd`.
The entry point reads that pipe and masks those tokens in the script's output (entry.Script).
If the module is not imported yet, the wrap happens when it is: importing it here would cost
every script the SDK's import time.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import threading

# Every script's process imports this module: no typing, no importlib.abc (which brings
# importlib.resources, tempfile and zipfile: 10 ms a run). The finder and loader are duck-typed,
# as the import system allows.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

MODULE = "ibm_cloud_sdk_core.token_managers.iam_request_based_token_manager"
_lock = threading.Lock()


def install(fd: int) -> None:
    if MODULE in sys.modules:
        _wrap(sys.modules[MODULE], fd)
    else:
        sys.meta_path.insert(0, _Finder(fd))


def _report(fd: int, token_response: Any) -> None:
    if not isinstance(token_response, dict):
        return
    for name in ("access_token", "refresh_token"):
        value = token_response.get(name)
        if isinstance(value, str) and len(value) >= 16 and "\n" not in value:
            with _lock:  # whole lines, whichever thread refreshes
                os.write(fd, value.encode() + b"\n")


def _wrap(module: ModuleType, fd: int) -> None:
    cls = module.IAMRequestBasedTokenManager
    original = cls._save_token_info

    def _save_token_info(self: Any, token_response: dict[str, Any]) -> None:
        _report(fd, token_response)  # before the client can hand the token to anyone
        original(self, token_response)

    cls._save_token_info = _save_token_info


class _Finder:
    """Wraps the module right after it is first imported, then steps aside."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader, fd = spec.loader, self.fd

        class _Loader:
            def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
                return loader.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                loader.exec_module(module)
                _wrap(module, fd)

        spec.loader = _Loader()  # type: ignore[assignment]  # duck-typed: importlib.abc costs 10 ms
        return spec
