"""A local-platform sandbox reaches nothing outside its run's network, shown against listeners of
our own that a container on an ordinary network does reach (the positive control).

The targets are read from the engine while the run is live: the run network's own gateway, the
engine's default bridge gateway, the host's own addresses, each with a listener of ours on the
host behind it, and a listener in a container on the default bridge (standing in for the
internet, which these machines cannot reach at all, so DNS failing alone would prove nothing).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT

from qsandbox.launcher.core.settings import LABEL

PYTHON = "/opt/qsandbox/bin/python"  # the image's interpreter


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="qsandbox-reach-"))
    d.chmod(0o755)  # it becomes the sandbox's /work; no secret in it
    shutil.copy(ROOT / "tests" / "scripts" / "reach_out.py", d / "reach_out.py")
    (d / "reach_out.py").chmod(0o644)
    yield d
    shutil.rmtree(d)


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A listener on every host address, accepting (and closing) every connection."""
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))  # noqa: S104 - the point is to be reachable if anything is
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                listener.accept()[0].close()
            except OSError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield listener.getsockname()[1]
    stop.set()
    t.join()
    listener.close()


@pytest.fixture
def outside_listener(docker_client, image) -> Iterator[tuple[str, str]]:
    """A listener in a container on the engine's default bridge: an address outside the run.
    Yields its address and the bridge's gateway (the host's side)."""
    c = docker_client.containers.run(
        image,
        entrypoint=[PYTHON, "-m", "http.server", "8080"],
        user="10001",
        network="bridge",
        detach=True,
        labels={"qsandbox.test": "outside-listener"},
    )
    try:
        c.reload()
        bridge = c.attrs["NetworkSettings"]["Networks"]["bridge"]
        yield bridge["IPAddress"], bridge["Gateway"]
    finally:
        c.remove(force=True)


def _host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        name, addr = line.split()[1], line.split()[3].split("/")[0]
        if name != "lo" and not name.startswith(("docker", "br-", "veth")):
            found.append(addr)
    return found


def _reached(stdout: str) -> dict[str, str]:
    return {k: v.split()[0] for k, _, v in (line.partition(": ") for line in stdout.splitlines()) if v}


def test_nothing_outside_the_run_network_is_reached(docker_client, image, workdir, host_listener, outside_listener):
    outside_address, bridge_gateway = outside_listener
    outside = [
        ["bridge gateway", bridge_gateway, host_listener],
        ["outside container", outside_address, 8080],
        *(["host " + a, a, host_listener] for a in _host_addresses()),
    ]
    # The positive control: from an ordinary container on the default bridge, every one answers.
    control = docker_client.containers.run(
        image,
        entrypoint=[PYTHON, "/work/reach_out.py", "--targets-json", json.dumps(outside)],
        user="10001",
        network="bridge",
        volumes={str(workdir): {"bind": "/work", "mode": "ro"}},
        remove=True,
    ).decode()
    for label, *_ in outside:
        assert _reached(control)[label] == "reached", control

    marker = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "qsandbox", "run", "--platform", "local",
            str(workdir / "reach_out.py"), "--targets", marker,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", line + proc.communicate(timeout=60)[1]
        (sandbox,) = [c for c in docker_client.containers.list(filters={"label": LABEL}) if marker in c.attrs["Args"]]
        (net_name,) = sandbox.attrs["NetworkSettings"]["Networks"]
        run_net = docker_client.api.inspect_network(net_name)
        assert run_net["Internal"] is True
        # The network's own gateway: the engine gives the sandbox one even with no host address
        # behind it; else the subnet's first address, which the engine would have given it.
        run_gateway = sandbox.attrs["NetworkSettings"]["Networks"][net_name]["Gateway"] or str(
            next(ipaddress.ip_network(run_net["IPAM"]["Config"][0]["Subnet"]).hosts())
        )
        targets = [
            ["run network gateway", run_gateway, host_listener],
            *outside,
            ["emulator", "quantum.cloud.ibm.com", 443],  # the run's own network does work
        ]
        # Through the engine, as a file made whole by a rename (nothing of the host is mounted).
        write = (
            f"import os; open('/tmp/.t', 'w').write({json.dumps(targets)!r}); "
            f"os.rename('/tmp/.t', '/tmp/targets-{marker}')"
        )
        assert sandbox.exec_run([PYTHON, "-c", write]).exit_code == 0
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.terminate()  # the launcher tears the run down
            proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    seen = _reached(out)
    assert seen["emulator"] == "reached", out
    assert seen["dns"] == "failed", out
    for label, *_ in targets[:-1]:
        assert seen[label] == "unreachable", f"{label}: {out}"
