from __future__ import annotations

import os

from qsandbox.launcher.engine.client import EngineInfo
from qsandbox.launcher.engine.preflight import engine_access, engine_logging, swap

INFO = EngineInfo(
    kind="Docker", version="20.10", api_version="1.41", rootless=False, log_driver="json-file", debug=False
)


def test_swap():
    header = "Filename\tType\tSize\tUsed\tPriority\n"
    assert swap(header).warning is None
    found = swap(header + "/swapfile file 1048572 0 -2\n")
    assert found.warning and "/swapfile" in found.warning and "swapoff" in found.warning


def test_debug_mode():
    assert engine_logging(INFO).warning is None
    debug = EngineInfo(**{**INFO.__dict__, "debug": True})
    assert "debug mode" in (engine_logging(debug).warning or "")


def test_engine_access(tmp_path):
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    os.chmod(sock, 0o660)
    assert engine_access(INFO, f"unix://{sock}", os.getuid()).warning is None
    os.chmod(sock, 0o666)  # noqa: S103 - the condition under test, on a plain temp file
    assert "open to every user" in (engine_access(INFO, f"unix://{sock}", os.getuid()).warning or "")
    assert "over the network" in (engine_access(INFO, "tcp://10.0.0.1:2375", os.getuid()).warning or "")
    rootless = EngineInfo(**{**INFO.__dict__, "rootless": True})
    assert engine_access(rootless, "tcp://x:1", os.getuid()).warning is None
