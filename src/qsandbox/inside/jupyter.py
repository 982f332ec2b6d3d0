"""`qsandbox lab`'s script: JupyterLab, as the sandbox user, on the sandbox's loopback only.

Run by the runner as `-m qsandbox.inside.jupyter` (the image derived for the lab has JupyterLab).
The token comes from the file the entry point wrote (common/paths.LAB_TOKEN_FILE), which is removed
once read; it reaches JupyterLab in a config file of the /tmp tmpfs (0600), never in an argument or
an environment variable. JupyterLab serves /work at 127.0.0.1:LAB_PORT, where only the entry
point's `Door` (inside/lab.py) connects, for the launcher. Every Jupyter and IPython directory is
under /tmp (the root file system is read-only). Kernels are the image's Python with the IAM token
watch (`qsandbox.inside.kernel`), reporting to a file the entry point reads before the work goes
back (inside/lab.py). Its log is the script's output: the entry point masks the token in it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..common.paths import LAB_PORT, LAB_TOKEN_FILE, WORKDIR
from .lab import RUNTIME, TOKEN_LOG
from .notebook import point_jupyter_at_tmpfs, register_kernel


def _read_token() -> str:
    with open(LAB_TOKEN_FILE, encoding="ascii") as f:
        token = f.read().strip()
    os.unlink(LAB_TOKEN_FILE)
    return token


def configure(token: str) -> None:
    """Jupyter's directories, the kernel, and the server's settings (the token among them)."""
    point_jupyter_at_tmpfs()
    assert os.environ["JUPYTER_RUNTIME_DIR"] == RUNTIME, "the entry point's door watches it"  # an invariant
    # The kernels' IAM tokens go to a file (Jupyter closes the token pipe's descriptor in its kernels).
    os.environ.pop("QSANDBOX_TOKEN_FD", None)
    os.environ["QSANDBOX_TOKEN_LOG"] = TOKEN_LOG
    register_kernel("python3", "Python 3 (qsandbox)")  # takes the place of ipykernel's own python3
    config = {
        "ServerApp": {
            "ip": "127.0.0.1",
            "port": LAB_PORT,
            "port_retries": 0,
            "open_browser": False,
            "root_dir": str(WORKDIR),
            "allow_remote_access": False,
        },
        "IdentityProvider": {"token": token},
        # Nothing of JupyterLab's own reaches out (the sandbox's way out is for IBM's hosts): no update
        # check, no news feed, and an extension manager that lists what is installed, never PyPI.
        "LabApp": {
            "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
            "news_url": None,
            "extension_manager": "readonly",
        },
    }
    # No prompt about Jupyter's news feed: the sandbox could not fetch it anyway.
    labconfig = Path(os.environ["JUPYTER_CONFIG_DIR"]) / "labconfig"
    labconfig.mkdir(mode=0o700, exist_ok=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    path = Path(os.environ["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f)


def main() -> int:
    configure(_read_token())
    os.chdir(str(WORKDIR))
    from jupyterlab.labapp import LabApp  # type: ignore[import-not-found]  # only in the lab's image

    sys.argv = ["jupyter-lab"]
    LabApp.launch_instance()
    return 0


if __name__ == "__main__":
    sys.exit(main())
