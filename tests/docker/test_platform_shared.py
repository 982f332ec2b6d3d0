"""`qsandbox platform up/down` and `run --platform shared`: one emulator for many runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, qsandbox

pytestmark = pytest.mark.docker
SCRIPTS = ROOT / "tests" / "scripts"
ADMIN = (
    "import json, ssl, urllib.request as u;"
    "ctx = ssl.create_default_context(cafile='/tmp/qsandbox-ca.pem');"
    "r = u.Request('https://localhost/_qsandbox/jobs', headers={'X-Qsandbox-Admin': '1'});"
    "print(u.urlopen(r, context=ctx).read().decode())"
)


def _emulator_jobs(docker_client) -> list[dict]:
    code, out = docker_client.containers.get("qsandbox-platform").exec_run(["python", "-c", ADMIN])
    assert code == 0, out
    body = json.loads(out)
    return body["jobs"] if isinstance(body, dict) else body


@pytest.fixture
def shared_platform(image, docker_client):
    done = qsandbox("platform", "up")
    assert done.returncode == 0, done.stderr
    yield
    done = qsandbox("platform", "down")
    assert done.returncode == 0 and "shared platform down" in done.stderr
    from qsandbox.launcher import sandbox

    assert sandbox.leftovers(docker_client) == []
    assert not docker_client.networks.list(names=["qsandbox-platform"])


def test_many_runs_share_one_emulator_and_interrupts_leave_no_job_running(shared_platform, docker_client):
    for _ in range(2):
        done = qsandbox("run", "--platform", "shared", str(ROOT / "examples" / "bell.py"))
        assert done.returncode == 0, done.stdout + done.stderr
    completed = [j for j in _emulator_jobs(docker_client) if j["status"] == "Completed"]
    assert len(completed) == 2

    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qsandbox", "run", "--platform", "shared", str(SCRIPTS / "submit_and_cancel.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    submitted = proc.stdout.readline()
    assert submitted.startswith("submitted:"), proc.stderr.read() if proc.poll() is not None else submitted
    ids = set(submitted.split()[1:])
    assert proc.stdout.readline().strip() == "sleeping"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, err
    # Asked of the emulator itself, after the run: none of the run's jobs is queued or running.
    states = {j["id"]: j["status"] for j in _emulator_jobs(docker_client) if j["id"] in ids}
    assert set(states) == ids
    assert set(states.values()) == {"Cancelled"}, states


def test_sweep_leaves_the_shared_platform_alone(shared_platform, docker_client):
    done = qsandbox("sweep")
    assert done.returncode == 0
    assert docker_client.containers.get("qsandbox-platform").status == "running"


def test_run_without_platform_up_is_one_line_error(image):
    qsandbox("platform", "down")
    done = qsandbox("run", "--platform", "shared", str(SCRIPTS / "exit_with.py"), "0")
    assert done.returncode == 2
    assert done.stderr.strip() == "qsandbox: no shared platform is running: start it with `qsandbox platform up`"


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
