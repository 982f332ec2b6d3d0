"""Where things are inside the sandbox: the paths and ports both sides agree on.

The launcher mounts and names them; the entry point inside writes and reads them. The image's
Dockerfile fixes the uid and the venv.
"""

from __future__ import annotations

from pathlib import PurePosixPath

SANDBOX_UID = 10001  # the image's user (Dockerfile); root's sandboxes get another: launcher/core/settings.py
HOME = PurePosixPath("/home/sandbox")
QISKIT_DIR = HOME / ".qiskit"  # tmpfs: qiskit-ibm-runtime's saved-account file lives here
SECRET_DIR = PurePosixPath("/run/qsandbox")  # tmpfs: raw key file (and the local platform's CA)
TOKEN_FILE = SECRET_DIR / "token"
CA_FILE = SECRET_DIR / "ca.pem"
WORKDIR = PurePosixPath("/work")  # the script's directory, read-only
OUTPUT_DIR = PurePosixPath("/output")
VENV_PYTHON = "/opt/qsandbox/bin/python"  # the image's interpreter (Dockerfile)
TOKEN_SERVER_PORT = 8765  # short-lived mode: the sandbox's own IAM token endpoint, on loopback
RELAY_PORT = 3128  # the entry point's CONNECT proxy, on the sandbox's loopback (inside/relay.py)
LAB_PORT = 8888  # qsandbox lab: JupyterLab, on the sandbox's loopback; the only port a launcher-opened channel reaches
LAB_TARGET = f"127.0.0.1:{LAB_PORT}"  # what the launcher's OPEN names (inside/lab.py refuses anything else)
LAB_TOKEN_FILE = SECRET_DIR / "lab-token"  # the lab's token, from the entry point to JupyterLab (read, then removed)
