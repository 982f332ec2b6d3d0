"""`--platform local`: unchanged example scripts against the emulated platform, real client inside."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from helpers import ROOT, qsandbox

EXAMPLES = ROOT / "examples"
SCRIPTS = ROOT / "tests" / "scripts"


def _line(stdout: str, prefix: str) -> str:
    for line in stdout.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"no line starting {prefix!r} in:\n{stdout}")


def _assert_bell(counts: dict[str, int], shots: int) -> None:
    """A Bell pair's counts, with bounds from the shot count: 00 and 11 each near half of the
    correlated shots, within six standard deviations of a fair binomial (one false failure in
    about five hundred million runs); noise leaves a few percent of 01 and 10."""
    assert sum(counts.values()) == shots
    p00, p11 = counts.get("00", 0) / shots, counts.get("11", 0) / shots
    assert p00 + p11 > 0.9, counts
    slack = 6 * (0.25 / shots) ** 0.5 + 0.05  # six sigma of the coin, and the noise's share
    assert abs(p00 - 0.5) < slack and abs(p11 - 0.5) < slack, (counts, slack)


def test_bell_demo_with_a_throwaway_key(image, docker_client):
    done = qsandbox("run", "--platform", "local", str(EXAMPLES / "bell.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_bell(json.loads(_line(done.stdout, "counts:")), 1000)
    assert "Warning" not in done.stderr, done.stderr  # the main demo uses what IBM recommends today
    assert "container and secret destroyed (engine confirms)" in done.stderr
    from qsandbox.launcher.engine import sandbox

    assert sandbox.leftovers(docker_client) == []


def test_bell_with_the_users_key_leaves_no_trace(image, canary, leak_search):
    done = qsandbox("run", "--platform", "local", "--token-stdin", str(EXAMPLES / "bell.py"), input=canary + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_bell(json.loads(_line(done.stdout, "counts:")), 1000)
    assert leak_search.all_hits() == []


def test_ibm_fleet_names_run(image):
    """ibm_fez (156 qubits) and ibm_torino (133) by their real names: a Bell pair and an estimator."""
    done = qsandbox("run", "--platform", "local", str(SCRIPTS / "fleet_jobs.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _line(done.stdout, "least busy:").startswith("ibm_")
    qubits, *gates = _line(done.stdout, "fez:").split()
    assert qubits == "156" and "cz" in gates
    counts = json.loads(_line(done.stdout, "counts:"))
    assert sum(counts.values()) == 1000 and (counts.get("00", 0) + counts.get("11", 0)) > 850, counts
    assert float(_line(done.stdout, "torino zz:")) > 0.5
    # How fast (goal < 15 s each): bench/bench.py's `emulator` step, not a timed test.


def test_whoami(image):
    done = qsandbox("run", "--platform", "local", str(EXAMPLES / "whoami.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _line(done.stdout, "channel:") == "ibm_quantum_platform"
    assert _line(done.stdout, "instance:").startswith("crn:v1:bluemix:public:quantum-computing:us-east:")
    assert "token" not in _line(done.stdout, "account:")


def test_estimator(image):
    done = qsandbox("run", "--platform", "local", str(EXAMPLES / "estimator.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    evs = json.loads(_line(done.stdout, "evs:"))
    assert isinstance(evs, list) and evs


def test_executor_sampler(image):
    done = qsandbox("run", "--platform", "local", str(EXAMPLES / "executor_sampler.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    counts = json.loads(_line(done.stdout, "counts:"))
    _assert_bell(counts, sum(counts.values()))


def test_session(image):
    done = qsandbox("run", "--platform", "local", str(EXAMPLES / "session.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _line(done.stdout, "session:")


def test_rest_api(image):
    done = qsandbox("run", "--platform", "local", str(EXAMPLES / "rest_api.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _line(done.stdout, "backends:")


def test_wrong_key_is_refused_by_the_client(image):
    done = qsandbox("run", "--platform", "local", str(SCRIPTS / "wrong_key.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _line(done.stdout, "refused:").split()[0] in ("InvalidAccountError", "IBMNotAuthorizedError")


def test_cancel(image):
    done = qsandbox("run", "--platform", "local", str(SCRIPTS / "submit_and_cancel.py"), "cancel")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(_line(done.stdout, "statuses:").split()) == {"CANCELLED"}


def test_local_network_reaches_nothing_outside(image):
    # A listener on this machine, on every address: the sandbox must not reach it either.
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))  # noqa: S104 - the point is to be reachable if anything is
        listener.listen()
        port = listener.getsockname()[1]
        gateway = "172.17.0.1"  # the engine's default bridge on this machine
        done = qsandbox("run", "--platform", "local", str(SCRIPTS / "reach_out.py"), gateway, str(port))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _line(done.stdout, "dns:") == "failed"
    assert _line(done.stdout, "host listener:").startswith("unreachable")
    if "gateway:" in done.stdout:
        assert _line(done.stdout, "gateway:").startswith("unreachable")


def test_interrupted_run_cancels_its_jobs(image, popen):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    proc = popen(
        [sys.executable, "-m", "qsandbox", "run", "--platform", "local", str(SCRIPTS / "submit_and_cancel.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    submitted = proc.stdout.readline()
    assert submitted.startswith("submitted:"), proc.stderr.read() if proc.poll() is not None else submitted
    jobs = submitted.split()[1:]
    assert proc.stdout.readline().strip() == "sleeping"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    # The entry point reports each job it cancelled, after asking the platform for pending jobs.
    for job in jobs:
        assert f"cancelled job {job}" in err, err
    assert "no Runtime job of this run is left queued or running" in err


def test_short_lived_mode_keeps_the_api_key_out_of_the_sandbox(image, canary, leak_search):
    import hashlib

    done = qsandbox(
        "run",
        "--platform",
        "local",
        "--token-mode",
        "short-lived",
        "--token-stdin",
        str(SCRIPTS / "search_for_key.py"),
        hashlib.sha256(canary.encode()).hexdigest(),
        input=canary + "\n",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    line = _line(done.stdout, "searched ")
    assert line.endswith("key found: []"), line
    assert int(line.split()[0]) > 10 and int(line.split()[3]) > 10  # files, MiB of memory
    _assert_bell(json.loads(_line(done.stdout, "counts:")), 1000)
    assert leak_search.all_hits() == []


def test_short_lived_search_can_find_a_key_it_holds(image, canary):
    """The same search, in api-key mode, does find the key: the test above could fail."""
    import hashlib

    done = qsandbox(
        "run",
        "--platform",
        "local",
        "--token-stdin",
        str(SCRIPTS / "search_for_key.py"),
        hashlib.sha256(canary.encode()).hexdigest(),
        input=canary + "\n",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "/run/qsandbox/token" in _line(done.stdout, "searched ")


@pytest.mark.parametrize("redact", [True, False])
def test_iam_tokens_the_client_obtains_are_masked_opaque_refresh_token_included(image, redact):
    """The emulator's refresh tokens are opaque, as IAM's are: only knowing them can mask them."""
    done = qsandbox(
        "run", "--platform", "local", *([] if redact else ["--no-redact"]), str(SCRIPTS / "print_tokens.py")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _line(done.stdout, "refresh length:") == "128 jwt-shaped: False"
    refresh = _line(done.stdout, "refresh:")
    if not redact:  # the test can fail: unmasked, the token is right there
        assert len(refresh) == 128 and _line(done.stdout, "slow:") == refresh
        return
    assert refresh == "***"
    assert _line(done.stdout, "slow:") == "***"
    assert "***" in _line(done.stdout, "refresh b64:")
    assert _line(done.stderr, "access:") == "***"
    assert done.stdout.rstrip().endswith("done")


def test_queue_time_makes_jobs_wait_as_on_ibm(image):
    """--queue-time 20: QUEUED, then RUNNING, then DONE, and result(timeout=5) times out meanwhile."""
    done = qsandbox("run", "--platform", "local", "--queue-time", "20", str(SCRIPTS / "queue_watch.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["timed_out"] == "RuntimeJobTimeoutError", report
    statuses = [s for s, _ in report["seen"]]
    assert statuses == ["QUEUED", "RUNNING", "DONE"], report
    (_, running_at), (_, done_at) = report["seen"][1], report["seen"][2]
    assert 10 < running_at < 20 and 17 < done_at < 30, report
