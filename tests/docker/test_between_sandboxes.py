"""No traffic between sandboxes that share an emulator: two runs on the shared platform, two scripts
of one `batch --platform local`. One listens, the other tries it by address, by name and by id,
while each reaches the platform; a container put on the listener's own network reaches it by the
same address and name (the positive control: the listener works, and the targets are right).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
from helpers import ROOT, qsandbox

from qsandbox.launcher.core.settings import LABEL

PYTHON = "/opt/qsandbox/bin/python"  # the image's interpreter
PEER = ROOT / "tests" / "scripts" / "peer.py"
PORT = 47811  # peer.py's
ENV = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}


@pytest.fixture
def peers(tmp_path: Path) -> tuple[str, Path, Path]:
    """listen_MARKER.py and connect_MARKER.py, readable by the sandbox user."""
    marker = os.urandom(6).hex()
    tmp_path.chmod(0o755)  # the scripts' directory; no secret in it
    paths = []
    for role in ("listen", "connect"):
        path = tmp_path / f"{role}_{marker}.py"
        shutil.copy(PEER, path)
        path.chmod(0o644)
        paths.append(path)
    return marker, paths[0], paths[1]


@pytest.fixture
def shared_platform(image, docker_client) -> Iterator[None]:
    done = qsandbox("platform", "up")
    assert done.returncode == 0, done.stderr
    yield
    assert qsandbox("platform", "down").returncode == 0


def _sandbox(docker_client, name: str, timeout: float = 120):
    """The running sandbox whose script is `name`, once it exists."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            found = [
                c
                for c in docker_client.containers.list(filters={"label": LABEL})
                if any(name in arg for arg in c.attrs["Args"])
            ]
        except docker.errors.NotFound:  # one removed while listed
            found = []
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no sandbox for {name} within {timeout} s")


def _write(container, path: str, text: str) -> None:
    """A file made whole by a rename, through the engine (nothing of the host is mounted)."""
    code = f"import os; open('{path}.t', 'w').write({text!r}); os.rename('{path}.t', '{path}')"
    result = container.exec_run([PYTHON, "-c", code])
    assert result.exit_code == 0, result.output


def _wait_for_file(container, path: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if container.exec_run([PYTHON, "-c", f"import os, sys; sys.exit(not os.path.exists('{path}'))"]).exit_code == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear in {container.name}")


def _wait_gone(docker_client, container, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            docker_client.api.inspect_container(container.id)
        except docker.errors.NotFound:
            return
        time.sleep(0.2)
    raise AssertionError(f"{container.name} still there")


def _lines(text: str) -> dict[str, str]:
    return {k: v for k, _, v in (line.partition(": ") for line in text.splitlines()) if v}


def _meet(docker_client, image, marker: str, done_connecting) -> tuple[str, list[str]]:
    """With both sandboxes live: the connector's targets are the listener's address, name and id;
    once it is done (`done_connecting()`), a container on the listener's network tries the same
    targets (the control), and the listener is told to stop. Returns the listener's address and the
    control's lines."""
    listener = _sandbox(docker_client, f"listen_{marker}.py")
    connector = _sandbox(docker_client, f"connect_{marker}.py")
    _wait_for_file(listener, f"/tmp/listening-{marker}")
    listener.reload()
    (network, settings), *more = listener.attrs["NetworkSettings"]["Networks"].items()
    assert more == [], listener.attrs["NetworkSettings"]["Networks"]
    address = settings["IPAddress"]
    targets = [
        ["peer by address", address, PORT],
        ["peer by name", listener.name, PORT],
        ["peer by id", listener.id[:12], PORT],
    ]
    _write(connector, f"/tmp/targets-{marker}", json.dumps(targets))
    done_connecting(connector)
    control = docker_client.containers.run(
        image,
        entrypoint=[PYTHON, "-c", _CONTROL, json.dumps(targets)],
        user="10001",
        network=network,
        remove=True,
        labels={"qsandbox.test": "between-sandboxes-control"},
    ).decode()
    _write(listener, f"/tmp/stop-{marker}", "")
    return address, control.splitlines()


_CONTROL = """
import json, socket, sys
for label, host, port in json.loads(sys.argv[1]):
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect((host, port)); print(label + ": reached")
    except OSError as e:
        print(label + ": unreachable", type(e).__name__)
    s.close()
"""


def _check(listener_out: str, connector_out: str, control: list[str], address: str) -> None:
    listened, connected = _lines(listener_out), _lines(connector_out)
    assert listened.get("platform") == "reached", listener_out
    assert connected.get("platform") == "reached", connector_out  # each reaches its platform
    # the control, from the listener's own network: every target is right and the listener answers
    assert control == ["peer by address: reached", "peer by name: reached", "peer by id: reached"], control
    for label in ("peer by address", "peer by name", "peer by id"):
        assert connected[label].split()[0] in ("unreachable", "unresolved"), connector_out
    assert "done" in connector_out.splitlines(), connector_out
    accepted = [line for line in listener_out.splitlines() if line.startswith("accepted from")]
    assert len(accepted) == 3, listener_out  # the control's three, nothing else
    assert address  # the listener had one


def test_two_runs_on_the_shared_platform_cannot_reach_each_other(shared_platform, docker_client, image, peers):
    marker, listen, connect = peers
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "qsandbox", "run", "--platform", "shared", str(script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for script in (listen, connect)
    ]
    try:
        outputs: dict[str, tuple[str, str]] = {}

        def connector_done(_container) -> None:
            outputs["connect"] = procs[1].communicate(timeout=120)

        address, control = _meet(docker_client, image, marker, connector_done)
        outputs["listen"] = procs[0].communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.communicate(timeout=120)
    assert [p.returncode for p in procs] == [0, 0], outputs
    _check(outputs["listen"][0], outputs["connect"][0], control, address)


def test_two_scripts_of_one_local_batch_cannot_reach_each_other(docker_client, image, peers, tmp_path):
    marker, listen, connect = peers
    out = tmp_path / "out"  # each script's lines, also in its /output: whatever the batch's printing
    batch = ["batch", "--platform", "local", "-j", "2", "--output", str(out), str(listen), str(connect)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "qsandbox", *batch],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        address, control = _meet(docker_client, image, marker, lambda c: _wait_gone(docker_client, c))
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout + stderr
    listened, connected = ((out / p.stem / "peer.txt").read_text() for p in (listen, connect))
    _check(listened, connected, control, address)


def test_a_killed_runs_network_is_taken_off_the_shared_emulator_by_the_next_run(
    shared_platform, docker_client, tmp_path
):
    """SIGKILL leaves the run's network behind with the shared emulator still on it; the next run
    (once the network is older than a run needs to start) takes the emulator off and removes it."""
    from qsandbox.launcher.engine.localplatform import SHARED, STALE_AFTER

    hold = tmp_path / f"hold_{os.urandom(6).hex()}.py"
    shutil.copy(ROOT / "tests" / "scripts" / "sleep_forever.py", hold)
    tmp_path.chmod(0o755)  # the script's directory; no secret in it
    hold.chmod(0o644)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qsandbox", "run", "--platform", "shared", str(hold)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout.readline().strip() == "sleeping", proc.stderr.read() if proc.poll() is not None else ""
    box = _sandbox(docker_client, hold.name)
    (network,) = box.attrs["NetworkSettings"]["Networks"]
    assert network != SHARED
    made = time.monotonic()
    proc.kill()
    proc.communicate(timeout=30)
    _wait_gone(docker_client, box, timeout=30)
    emulator = docker_client.containers.get(SHARED)
    left = docker_client.api.inspect_network(network)  # the control: what a killed launcher leaves
    assert list(left["Containers"]) == [emulator.id]

    time.sleep(max(0.0, STALE_AFTER + 1 - (time.monotonic() - made)))
    done = qsandbox("run", "--platform", "shared", str(ROOT / "tests/scripts/exit_with.py"), "0")
    assert done.returncode == 0, done.stderr
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_network(network)
    emulator.reload()
    assert emulator.status == "running" and SHARED in emulator.attrs["NetworkSettings"]["Networks"]
    assert network not in emulator.attrs["NetworkSettings"]["Networks"]
