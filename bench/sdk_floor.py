"""The SDK floor: the least a Python launcher on the docker SDK must do for one sandboxed script.

    python bench/sdk_floor.py SCRIPT

Import the SDK, create a container with the same hardening (settings.Hardening.create_kwargs, as
the launcher), attach, start, copy its output until the stream ends (auto-remove then removes it).
No key, no checks, no read-back, no hand-off, no teardown confirmation: what qsandbox adds on top
of this is what `bench.py` compares against it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

import docker

from qsandbox.launcher.core.settings import IMAGE, Hardening

code = (Path(__file__).resolve().parent / "scripts" / sys.argv[1]).read_text()
client = docker.from_env()
container = client.containers.create(
    IMAGE,
    entrypoint=["/opt/qsandbox/bin/python", "-c", code],
    working_dir="/",
    stdin_open=True,  # as the launcher: AttachStdin and StdinOnce
    **Hardening().create_kwargs(),
)
sock = client.api.attach_socket(cast(str, container.id), params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
container.start()
raw = sock._sock  # type: ignore[attr-defined]  # the SDK's SocketIO wraps the socket
while chunk := raw.recv(65536):
    sys.stdout.buffer.write(chunk[8:] if chunk[:1] in (b"\1", b"\2") else chunk)  # frame headers
    sys.stdout.buffer.flush()
sock.close()
