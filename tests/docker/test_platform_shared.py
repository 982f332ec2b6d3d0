"""`qsandbox platform up/down` and `run --platform shared`: one emulator for many runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import ROOT, error_lines, qsandbox

from qsandbox.common.platform_constants import INSTANCE_CRN
from qsandbox.launcher.checks.audit import canary as new_canary

SCRIPTS = ROOT / "tests" / "scripts"
# The emulator has no admin view: a key's jobs are read as the key's owner reads them, through the
# API (in the emulator's container, on localhost, with the key in the environment of that process only).
JOBS_OF = (
    "import json, os, ssl, urllib.parse, urllib.request as u;"
    "ctx = ssl.create_default_context(cafile='/tmp/qsandbox-ca.pem');"
    "form = urllib.parse.urlencode({'grant_type': 'urn:ibm:params:oauth:grant-type:apikey',"
    " 'apikey': os.environ['KEY']}).encode();"
    "token = json.load(u.urlopen(u.Request('https://localhost/identity/token', data=form), context=ctx));"
    "r = u.Request('https://localhost/api/v1/jobs?limit=1000', headers={"
    "'Authorization': 'Bearer ' + token['access_token'], 'Service-CRN': os.environ['CRN']});"
    "print(u.urlopen(r, context=ctx).read().decode())"
)


def _jobs_of(docker_client, key: str) -> list[dict]:
    """The jobs of `key`'s tenant, as the emulator lists them to that key."""
    emulator = docker_client.containers.get("qsandbox-platform")
    code, out = emulator.exec_run(["python", "-c", JOBS_OF], environment={"KEY": key, "CRN": INSTANCE_CRN})
    assert code == 0, out
    return json.loads(out)["jobs"]


@pytest.fixture
def shared_platform(image, docker_client):
    done = qsandbox("platform", "up")
    assert done.returncode == 0, done.stderr
    yield
    done = qsandbox("platform", "down")
    assert done.returncode == 0 and "shared platform down" in done.stderr
    from qsandbox.launcher.engine import sandbox

    assert sandbox.leftovers(docker_client) == []
    assert not docker_client.networks.list(names=["qsandbox-platform"])


def test_many_runs_share_one_emulator_and_interrupts_leave_no_job_running(shared_platform, docker_client, canary):
    for _ in range(2):
        done = qsandbox(
            "run", "--platform", "shared", "--token-stdin", str(ROOT / "examples" / "bell.py"), input=canary + "\n"
        )
        assert done.returncode == 0, done.stdout + done.stderr
    completed = [j for j in _jobs_of(docker_client, canary) if j["status"] == "Completed"]
    assert len(completed) == 2

    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "qsandbox", "run", "--platform", "shared", "--token-stdin",
            str(SCRIPTS / "submit_and_cancel.py"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    proc.stdin.write(canary + "\n")
    proc.stdin.close()
    proc.stdin = None
    submitted = proc.stdout.readline()
    assert submitted.startswith("submitted:"), proc.stderr.read() if proc.poll() is not None else submitted
    ids = set(submitted.split()[1:])
    assert proc.stdout.readline().strip() == "sleeping"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, err
    # Asked of the emulator itself, after the run: none of the run's jobs is queued or running.
    states = {j["id"]: j["status"] for j in _jobs_of(docker_client, canary) if j["id"] in ids}
    assert set(states) == ids
    assert set(states.values()) == {"Cancelled"}, states


def _answers(stdout: str) -> dict[str, str]:
    return {k: v for k, _, v in (line.partition(": ") for line in stdout.splitlines()) if v}


def test_another_key_sees_nothing_of_a_keys_jobs(shared_platform, docker_client, canary):
    """Two users of one shared platform, each with a key of their own: the second cannot list, read
    or delete the first one's job or session, nor see its usage; the former admin view answers
    nothing without a token. The first key still has all of it afterwards."""
    script = str(SCRIPTS / "tenant.py")
    a = qsandbox("run", "--platform", "shared", "--token-stdin", script, "submit", input=canary + "\n")
    assert a.returncode == 0, a.stdout + a.stderr
    made = _answers(a.stdout)
    job, session = made["job"], made["session"]
    assert [j["id"] for j in _jobs_of(docker_client, canary)] == [job]  # the positive control

    other = new_canary()
    b = qsandbox("run", "--platform", "shared", "--token-stdin", script, "probe", job, session, input=other + "\n")
    assert b.returncode == 0, b.stdout + b.stderr
    seen = _answers(b.stdout)
    assert seen["list status"] == "200" and seen["listed"] == "False" and seen["any params"] == "False", b.stdout
    assert seen["client job"] == "RuntimeJobNotFound", b.stdout
    for what in ("job", "results", "metrics", "session"):
        assert seen[f"GET {what}"] == "404", b.stdout
    assert seen["usage"] == "0", b.stdout
    for path in ("/_qsandbox/jobs", "/_qsandbox/health"):
        for host in ("quantum.cloud.ibm.com", "iam.cloud.ibm.com"):
            assert seen.get(f"admin {host}{path}") in ("401", "404"), b.stdout
    assert seen["client delete"] == "RuntimeJobNotFound", b.stdout
    assert seen["DELETE job"] == "404", b.stdout
    assert _jobs_of(docker_client, other) == []

    again = qsandbox("run", "--platform", "shared", "--token-stdin", script, "check", job, session, input=canary + "\n")
    assert again.returncode == 0, again.stdout + again.stderr
    kept = _answers(again.stdout)
    assert kept["status"] == "DONE" and kept["shots"] == "100" and kept["GET session"] == "200", again.stdout
    assert int(kept["usage"]) >= 1, again.stdout


def test_sweep_leaves_the_shared_platform_alone(shared_platform, docker_client):
    done = qsandbox("sweep")
    assert done.returncode == 0
    assert docker_client.containers.get("qsandbox-platform").status == "running"


def test_run_without_platform_up_is_one_line_error(image):
    qsandbox("platform", "down")
    done = qsandbox("run", "--platform", "shared", str(SCRIPTS / "exit_with.py"), "0")
    assert done.returncode == 2
    assert error_lines(done.stderr) == [
        "qsandbox: no shared platform is running: start it with `qsandbox platform up`"
    ], done.stderr


def test_revoke_after_kills_the_key_for_every_later_run(shared_platform, canary, leak_search):
    done = qsandbox(
        "run",
        "--platform",
        "shared",
        "--token-stdin",
        "--revoke-after",
        str(SCRIPTS / "use_account.py"),
        input=canary + "\n",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("accepted:")
    assert "qsandbox: API key revoked (id " in done.stderr
    again = qsandbox(
        "run", "--platform", "shared", "--token-stdin", str(SCRIPTS / "use_account.py"), input=canary + "\n"
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() in ("refused: InvalidAccountError", "refused: IBMNotAuthorizedError")
    # and `qsandbox revoke` on the dead key says exactly what failed
    done = qsandbox("revoke", "--platform", "shared", "--token-stdin", input=canary + "\n")
    assert done.returncode == 125
    assert "qsandbox: REVOKING THE API KEY FAILED: IAM answered 400" in done.stderr
    assert leak_search.all_hits() == []


def test_revoke_command_on_its_own(shared_platform, canary):
    done = qsandbox("revoke", "--platform", "shared", "--token-stdin", input=canary + "\n")
    assert done.returncode == 0, done.stderr
    assert "API key revoked" in done.stderr
    again = qsandbox(
        "run", "--platform", "shared", "--token-stdin", str(SCRIPTS / "use_account.py"), input=canary + "\n"
    )
    assert again.stdout.startswith("refused:"), again.stdout + again.stderr


def test_revoke_after_also_on_an_interrupted_run(shared_platform, canary):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qsandbox",
            "run",
            "--platform",
            "shared",
            "--token-stdin",
            "--revoke-after",
            str(ROOT / "tests/scripts/sleep_forever.py"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    proc.stdin.write(canary + "\n")
    proc.stdin.close()
    proc.stdin = None
    assert proc.stdout.readline().strip() == "sleeping"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, err
    assert "API key revoked" in err
    again = qsandbox(
        "run", "--platform", "shared", "--token-stdin", str(SCRIPTS / "use_account.py"), input=canary + "\n"
    )
    assert again.stdout.startswith("refused:"), again.stdout + again.stderr


def test_short_lived_token_is_refreshed_while_the_run_lasts(image, canary, docker_client):
    qsandbox("platform", "down")
    done = qsandbox("platform", "up", "--token-ttl", "60")
    assert done.returncode == 0, done.stderr
    try:
        done = qsandbox(
            "run",
            "--platform",
            "shared",
            "--token-mode",
            "short-lived",
            "--token-stdin",
            str(SCRIPTS / "outlive_token.py"),
            "70",
            input=canary + "\n",
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        first, after = done.stdout.splitlines()[:2]
        served = int(first.removeprefix("first: "))  # the emulator's fleet: the small fakes and IBM's names
        assert served >= 3
        assert after == f"after: {served} True"  # the 60 s token had expired by then
    finally:
        assert qsandbox("platform", "down").returncode == 0
