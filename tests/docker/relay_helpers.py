"""What the relay's real-engine tests share (tests/docker/test_relay.py, test_egress.py).

- `Listener` / `UdpListener`: listeners of the test's own on every address of this machine (the
  launcher's machine), which answer with their own name and keep what they heard, so that a test
  sees exactly which listener a connection reached;
- `control`: the same hostile script run from an ordinary container (the default bridge, or the
  stand-in network), the positive control that a listener is up and reachable;
- `start_launcher`: the real CLI in a subprocess (the `popen` fixture), optionally with the
  launcher's resolver owned by the test (`resolve`: names answered, every name asked recorded),
  without the machine's proxy variables unless the test gives its own;
- `stand_in`: the emulated platform on a labelled test bridge network with a public-looking subnet,
  reached from this machine by its address with `--connect-to` for each of IBM's names.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
from helpers import ROOT

from qsandbox.common.platform_constants import HOSTNAMES, INSTANCE_CRN
from qsandbox.launcher.core.settings import LABEL, VENV_PYTHON
from qsandbox.launcher.engine import localplatform
from qsandbox.launcher.run import egress

HOSTILE = ROOT / "tests" / "hostile"
EXAMPLES = ROOT / "examples"
SCRIPTS = ROOT / "tests" / "scripts"
TEST_LABEL = "qsandbox.test"  # not qsandbox.run: a sweep must not take the tests' objects away
PROXY_VARS = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)
BLOCK = 1 << 20


def wait_until(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Poll `check` until it holds; AssertionError naming `what` after `timeout` seconds (a limit on
    waiting for an event, never a measure of speed)."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)


def stream_bytes(seed: int, size: int) -> Iterator[bytes]:
    """`size` bytes of random.Random(seed), in blocks of 1 MiB (as tests/hostile/relay_bulk.py makes them)."""
    rng = random.Random(seed)  # test data, not a secret
    while size:
        block = rng.randbytes(min(size, BLOCK))
        size -= len(block)
        yield block


def digest_of(seed: int, size: int) -> str:
    h = hashlib.sha256()
    for block in stream_bytes(seed, size):
        h.update(block)
    return h.hexdigest()


@dataclass
class Conn:
    peer: str
    first: str = ""  # the first line the client sent
    received: int = 0  # bytes after the first line
    digest: str = ""  # their SHA-256, once the client half-closed (sink, stream)
    ended: threading.Event = field(default_factory=threading.Event)  # the client closed (or reset) it


class Listener:
    """TCP on 0.0.0.0 (every address of this machine), one thread per connection. The client's
    first line says what it wants:

        hold ID          wait until release(), then "released ID"
        probe            "probe ok" at once
        source N SEED    N bytes of stream_bytes(SEED, N), then close
        sink             read to EOF, then "sunk BYTES SHA256"
        push             send without end (the client is not meant to read)
        stall            read nothing, keep it open
        stream           read and count until EOF (`Conn.ended`)
        anything else    "heard-by NAME: LINE", then close
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))  # noqa: S104 - the point is to be reachable if anything is
        self.sock.listen(512)
        self.port: int = self.sock.getsockname()[1]
        self.conns: list[Conn] = []
        self._release = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def firsts(self) -> list[str]:
        with self._lock:
            return [c.first for c in self.conns]

    def heard(self, text: str) -> bool:
        return any(text in f for f in self.firsts())

    def count(self, prefix: str) -> int:
        return sum(f.startswith(prefix) for f in self.firsts())

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._closed.set()
        self._release.set()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                c, addr = self.sock.accept()
            except OSError:
                return
            conn = Conn(peer=addr[0])
            with self._lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(c, conn), daemon=True).start()

    def _serve(self, c: socket.socket, conn: Conn) -> None:
        try:
            buf = b""
            c.settimeout(600)
            while b"\n" not in buf and len(buf) < 4096:
                data = c.recv(4096)
                if not data:
                    break
                buf += data
            line, _, rest = buf.partition(b"\n")
            first = line.decode(errors="replace").strip()
            with self._lock:
                conn.first = first
            self._answer(c, conn, first, rest)
        except OSError:
            pass
        finally:
            conn.ended.set()
            with contextlib.suppress(OSError):
                c.close()

    def _answer(self, c: socket.socket, conn: Conn, first: str, rest: bytes) -> None:
        words = first.split()
        verb = words[0] if words else ""
        if verb == "hold":
            self._release.wait()
            c.sendall(f"released {' '.join(words[1:])}\n".encode())
        elif verb == "probe":
            c.sendall(b"probe ok\n")
        elif verb == "source":
            for block in stream_bytes(int(words[2]), int(words[1])):
                c.sendall(block)
        elif verb in ("sink", "stream"):
            h = hashlib.sha256(rest)
            conn.received = len(rest)
            while True:
                data = c.recv(1 << 16)
                if not data:
                    break
                h.update(data)
                conn.received += len(data)
            conn.digest = h.hexdigest()
            if verb == "sink":
                c.sendall(f"sunk {conn.received} {h.hexdigest()}\n".encode())
        elif verb == "push":
            block = b"p" * (1 << 16)
            while not self._closed.is_set():
                c.sendall(block)
        elif verb == "stall":
            self._closed.wait()
        else:
            c.sendall(f"heard-by {self.name}: {first}\n".encode())


class UdpListener:
    """UDP on 0.0.0.0: every datagram kept."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))  # noqa: S104 - the point is to be reachable if anything is
        self.port: int = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def heard(self, text: str) -> bool:
        return any(text.encode() in d for d in list(self.datagrams))

    def _read(self) -> None:
        while True:
            try:
                data, _ = self.sock.recvfrom(65536)
            except OSError:
                return
            self.datagrams.append(data)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def listeners(*names: str) -> Iterator[list[Listener]]:
    made = [Listener(n) for n in names]
    try:
        yield made
    finally:
        for listener in made:
            listener.close()


def host_address() -> str:
    """This machine's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("203.0.113.1", 9))
        return str(s.getsockname()[0])


def bridge_gateway(client: docker.DockerClient) -> str:
    """The engine's default bridge's gateway (this machine's side of docker0)."""
    config = client.networks.get("bridge").attrs["IPAM"]["Config"]
    return str(config[0].get("Gateway") or ipaddress.ip_network(config[0]["Subnet"])[1])


def control(client: docker.DockerClient, image: str, script: Path, *args: str, network: str = "bridge") -> str:
    """Run `script` (a hostile script) in an ordinary container of the image on `network`: the
    positive control that what the sandbox must not reach is up and reachable. Its output."""
    out = client.containers.run(
        image,
        entrypoint=[VENV_PYTHON, "-c", script.read_text(), *args],
        network=network,
        user="10001:10001",
        labels={TEST_LABEL: "relay-control"},
        remove=True,
        stdout=True,
        stderr=True,
    )
    return bytes(out).decode(errors="replace")


def results(text: str) -> dict[str, str]:
    """A hostile script's "LABEL: OUTCOME" lines as a dict (later lines win)."""
    found = {}
    for line in text.splitlines():
        label, sep, outcome = line.partition(": ")
        if sep:
            found[label] = outcome
    return found


# The launcher with a resolver the test owns: socket.getaddrinfo answers the names of
# QSBX_TEST_RESOLVE ({"name": ["address", port]}, the name exactly as asked) and records every name
# it is asked, one JSON string a line, in QSBX_TEST_RESOLVE_LOG; other names go to the real
# resolver. Nothing in qsandbox reads these variables: the test replaces the machine's resolver,
# which is what the launcher asks for every allowed name it connects to.
RESOLVER_OWNED_LAUNCHER = r"""
import json, os, socket, sys
answers = json.loads(os.environ.get("QSBX_TEST_RESOLVE", "{}"))
log = os.environ["QSBX_TEST_RESOLVE_LOG"]
real = socket.getaddrinfo
def getaddrinfo(host, port, *args, **kwargs):
    with open(log, "a") as f:
        f.write(json.dumps(host if isinstance(host, str) else repr(host)) + "\n")
    if host in answers:
        address, to = answers[host]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, to))]
    return real(host, port, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
from qsandbox.launcher.cli.commands import main
sys.argv[0] = "qsandbox"
main()
"""


def launcher_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without real keys' variables and without this machine's proxy
    settings (the launcher would chain through them), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM") and k not in PROXY_VARS}
    env.update(extra or {})
    return env


def start_launcher(
    popen: Callable[..., subprocess.Popen[str]],
    canary: str,
    *args: str,
    resolve: dict[str, tuple[str, int]] | None = None,
    resolve_log: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """`qsandbox run --token-stdin ARGS`, the key written and stdin closed; stdout and stderr pipes."""
    extra = dict(env or {})
    if resolve_log is not None:
        argv = [sys.executable, "-c", RESOLVER_OWNED_LAUNCHER]
        extra["QSBX_TEST_RESOLVE"] = json.dumps(resolve or {})
        extra["QSBX_TEST_RESOLVE_LOG"] = str(resolve_log)
    else:
        argv = [sys.executable, "-m", "qsandbox"]
    proc = popen(
        [*argv, "run", "--token-stdin", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=launcher_env(extra),
    )
    proc.stdin.write(canary + "\n")
    proc.stdin.close()
    proc.stdin = None
    return proc


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run_launcher(
    popen: Callable[..., subprocess.Popen[str]], canary: str, *args: str, **kw: Any
) -> tuple[int, str, str]:
    return finish(start_launcher(popen, canary, *args, **kw))


def closing_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("qsandbox: run ")]
    assert lines, f"no closing line in: {stderr[-2000:]}"
    return lines[-1]


def connect_to(name: str, address: str, port: int) -> list[str]:
    return ["--connect-to", f"{name}:443:{address}:{port}"]


def run_containers(client: docker.DockerClient, needle: str) -> list[dict[str, Any]]:
    """The labelled containers whose command holds `needle` (one run's sandbox), inspected; the
    low-level list: the SDK's inspects each and races with removal."""
    found = []
    for c in client.api.containers(all=True, filters={"label": LABEL}):
        if needle in str(c.get("Command", "")):
            with contextlib.suppress(docker.errors.NotFound):
                found.append(client.api.inspect_container(c["Id"]))
    return found


def run_objects(client: docker.DockerClient, run_id: str) -> list[str]:
    """Every container and network labelled with `run_id`."""
    flt = {"label": f"{LABEL}={run_id}"}
    names = [f"container {c['Names'][0]}" for c in client.api.containers(all=True, filters=flt)]
    return names + [f"network {n['Name']}" for n in client.api.networks(filters=flt)]


def vm_hwm(pid: int) -> int:
    """Peak resident memory of a process so far, in bytes (VmHWM of /proc/PID/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@dataclass
class StandIn:
    """The emulator under IBM's names, on a network this machine routes to, reached by its address."""

    network: str
    address: str
    ca_file: Path

    def options(self) -> list[str]:
        redirects = [o for h in HOSTNAMES if h in egress.HOSTS for o in connect_to(h, self.address, 443)]
        return ["--ca-file", str(self.ca_file), "--instance", INSTANCE_CRN, *redirects]


@contextlib.contextmanager
def stand_in(client: docker.DockerClient, image: str, workdir: Path, key_digests: list[str]) -> Iterator[StandIn]:
    """The emulator on a labelled bridge network of its own, in a public-looking /28 of
    198.51.100.0/24 (TEST-NET-2): an address no sandbox may reach, which this machine reaches."""
    tag = secrets.token_hex(4)
    name = f"qsandbox-test-standin-{tag}"
    network = None
    for block in random.sample(range(16), 16):
        pool = docker.types.IPAMPool(subnet=f"198.51.100.{16 * block}/28")
        try:
            network = client.networks.create(
                name,
                driver="bridge",
                ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                labels={TEST_LABEL: f"relay-standin-{tag}"},
            )
            break
        except docker.errors.APIError:  # the block is taken (another test's stand-in)
            continue
    assert network is not None, "no free /28 in 198.51.100.0/24 for the stand-in"
    emulator = None
    try:
        emulator = localplatform.start_emulator(client, image, f"test-{tag}", name, key_digests)
        attrs = client.api.inspect_container(emulator.emulator_id)
        address = attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
        ca = workdir / f"standin-{tag}-ca.pem"
        ca.write_text(emulator.ca_pem)
        yield StandIn(name, address, ca)
    finally:
        if emulator is not None:
            localplatform.stop(client, emulator)
        localplatform.remove_network(client, name)
