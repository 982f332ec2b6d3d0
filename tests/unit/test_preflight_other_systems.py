"""On a launcher that is not Linux (macOS or Windows with Docker Desktop) the host checks that
cannot be made say "not checked", never "host swap: off" from a /proc/swaps that is not there."""

from __future__ import annotations

import pytest
from helpers import is_machine_note

from qsandbox.launcher.engine import preflight
from qsandbox.launcher.engine.client import EngineInfo

DOCKER = EngineInfo(
    kind="Docker", version="27", api_version="1.47", rootless=False, log_driver="json-file", debug=False
)


@pytest.mark.parametrize("system", ["darwin", "win32"])
def test_host_checks_are_not_checked_elsewhere(system):
    found = {f.name: f for f in preflight.findings(DOCKER, {}, system=system)}
    for name in ("host swap", "engine access", "sandbox uid"):
        f = found[name]
        assert not f.checked and f.warning is None, f
        line = f.unchecked
        assert line == f"{name}: {f.detail}" and f"not checked: the launcher runs on {system}, not Linux" in line
        assert is_machine_note(f"qsandbox: {line}")  # said before a run as a note about the machine
    assert found["engine debug"].checked  # the engine's own answer is read wherever the launcher runs


def test_linux_still_checks(tmp_path):
    sock = tmp_path / "docker.sock"
    sock.touch(mode=0o600)
    found = {f.name: f for f in preflight.findings(DOCKER, {"DOCKER_HOST": f"unix://{sock}"}, system="linux")}
    assert found["host swap"].checked and found["engine access"].checked
