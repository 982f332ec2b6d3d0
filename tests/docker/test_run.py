"""`qsandbox run` against a real engine and the real qiskit-ibm-runtime client in the image."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, error_lines, is_machine_note, qsandbox

from qsandbox.launcher.checks.audit import release
from qsandbox.launcher.core.settings import LABEL, sandbox_uid

SCRIPTS = ROOT / "tests" / "scripts"
CRN = (
    "crn:v1:bluemix:public:quantum-computing:us-east:a/0123456789abcdef0123456789abcdef:"
    "1c1a7c9e-0000-4000-8000-000000000001::"
)


def labelled(client, run_id: str | None = None) -> list[str]:
    from qsandbox.launcher.engine import sandbox

    return sandbox.leftovers(client, run_id)


def test_account_discovery_finds_exactly_the_canary_in_tmpfs(image, canary, leak_search):
    done = qsandbox(
        "run", "--token-stdin", "--instance", CRN, str(SCRIPTS / "inspect_account.py"), "a", "b c", input=canary + "\n"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["token_sha256"] == hashlib.sha256(canary.encode()).hexdigest()
    assert report["instance"] == CRN
    assert report["channel"] == "ibm_quantum_platform"
    assert report["account_dir_fs"] == "tmpfs"
    assert report["token_file_fs"] == "tmpfs"
    assert report["account_file_mode"] == "0o600"
    assert report["token_file_matches"] is True
    assert report["key_in_environment"] is False
    assert report["key_in_cmdline"] is False
    assert report["uid"] == sandbox_uid()  # as root: a uid no host account has
    assert report["args"] == ["a", "b c"]
    assert report["cwd"] == "/work"
    assert "container and secret destroyed (engine confirms)" in done.stderr
    assert leak_search.all_hits() == []


@pytest.fixture
def held() -> Iterator[Path]:
    """A copy of hold_then_exit.py in a directory of its own that the sandbox user can reach (the
    launcher checks: pytest's tmp_path lies under a root-only directory). It becomes /work."""
    d = Path(tempfile.mkdtemp(prefix="qsandbox-held-"))
    d.chmod(0o755)  # no secret in it
    script = d / "hold_then_exit.py"
    script.write_text((SCRIPTS / "hold_then_exit.py").read_text())
    script.chmod(0o644)
    yield script
    shutil.rmtree(d)


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_is_passed_through(image, canary, leak_search, docker_client, held, popen, code):
    marker = secrets.token_hex(8)
    script = held
    proc = popen(
        [sys.executable, "-m", "qsandbox", "run", "--token-stdin", str(script), str(code), marker],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    proc.stdin.write(canary + "\n")
    proc.stdin.close()
    proc.stdin = None
    line = proc.stdout.readline()
    assert line.strip() == "holding", line + proc.communicate(timeout=60)[1]
    # While the key is inside: the live sandbox, the engine, every process, the launcher.
    assert leak_search.live_hits(marker, proc.pid) == []
    run_id = _run_id(docker_client, marker)
    release(marker)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"about to exit {code}" in out
    assert f" exit {code} in " in err
    assert labelled(docker_client, run_id) == []
    assert leak_search.all_hits() == []


def test_timeout_exits_124_and_destroys(image, canary, leak_search, docker_client, popen):
    marker = secrets.token_hex(8)
    # Long enough for the live search, controls and all (about 4 s here), on a loaded machine too.
    proc = _start_running(popen, canary, "sleep_forever.py", marker, options=("--timeout", "30"))
    assert leak_search.live_hits(marker, proc.pid) == []
    run_id = _run_id(docker_client, marker)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 124, err
    assert "(timeout)" in err
    assert labelled(docker_client, run_id) == []
    assert leak_search.all_hits() == []


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}


def _start_running(
    popen, canary: str, script: str = "sleep_forever.py", *args: str, options: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    env = _env()
    env["QS_TEST_KEY"] = canary
    proc = popen(
        [sys.executable, "-m", "qsandbox", "run", "--token-env", "QS_TEST_KEY", *options, str(SCRIPTS / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    assert line.strip() == "sleeping", line + proc.communicate(timeout=60)[1]
    return proc


def _run_id(client, marker: str) -> str:
    """The run id of the one running sandbox whose script got `marker` as an argument."""
    (run_id,) = [c.labels[LABEL] for c in client.containers.list(filters={"label": LABEL}) if marker in c.attrs["Args"]]
    return run_id


@pytest.mark.parametrize(
    ("sig", "code", "reason"),
    [(signal.SIGINT, 130, "interrupt"), (signal.SIGTERM, 143, "terminate"), (signal.SIGHUP, 129, "hangup")],
)
def test_signals_abort_cleanly(image, canary, leak_search, docker_client, popen, sig, code, reason):
    marker = secrets.token_hex(8)
    proc = _start_running(popen, canary, "sleep_forever.py", marker)
    # The launcher got the key in its environment (--token-env): it must be gone from /proc.
    assert leak_search.live_hits(marker, proc.pid) == []
    run_id = _run_id(docker_client, marker)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"({reason})" in err
    assert "container and secret destroyed (engine confirms)" in err
    assert labelled(docker_client, run_id) == []
    assert leak_search.all_hits() == []


def test_sigkill_of_launcher_is_a_dead_man_switch(image, canary, leak_search, docker_client, popen):
    marker = secrets.token_hex(8)
    proc = _start_running(popen, canary, "sleep_forever.py", marker)
    assert leak_search.live_hits(marker, proc.pid) == []
    run_id = _run_id(docker_client, marker)
    proc.kill()
    proc.communicate()
    killed = time.monotonic()

    def containers() -> list[str]:
        return [n for n in labelled(docker_client, run_id) if n.startswith("container ")]

    assert containers(), "the control: the run's containers are there before they go"
    # A deadline, not a speed claim: they must go by themselves (how fast is bench/bench.py's
    # teardown step, goal <= 2 s); a loaded machine may take longer, a broken switch never.
    while containers() and time.monotonic() - killed < 120:
        time.sleep(0.05)
    assert containers() == [], f"a container outlived the launcher by {time.monotonic() - killed:.0f} s"
    # Nothing of the run is left at all: the sandbox had network mode none (the relay), so there is
    # no network object for a killed launcher to leave behind.
    assert labelled(docker_client, run_id) == []
    assert leak_search.all_hits() == []


def test_output_dir_and_read_only_workdir(image, canary, tmp_path, docker_client):
    out = tmp_path / "out"
    done = qsandbox("run", "--token-stdin", "--output", str(out), str(SCRIPTS / "write_output.py"), input=canary + "\n")
    assert done.returncode == 0, done.stderr
    # /work is a tmpfs the entry point filled and then made read-only by mode (nothing is mounted
    # from the host, and a sandbox without capabilities cannot remount it read-only).
    assert "work dir read-only: Permission denied" in done.stdout
    result = out / "result.txt"
    assert result.read_text() == "hello from the sandbox\n"
    assert result.stat().st_uid == os.getuid()


def _containers_with(client, marker: str) -> list[str]:
    """Containers (any state) whose command holds `marker`: this attempt's, whatever other runs
    share the engine (a refused run is refused before anything is created, so none may exist)."""
    return [c["Id"][:12] for c in client.api.containers(all=True) if marker in (c.get("Command") or "")]


BAD_KEYS = [
    ("", "is empty"),
    ("short", "only 5 characters long"),
    ("abc def ghijklmnopqrstuvwxyz0123456789", "contains whitespace"),
    ("abcdefghijklmnop\x07qrstuvwxyz0123456789", "contains control or non-ASCII"),
    ("k" * 5000, "5000 characters long"),
]


@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_bad_keys_are_refused_and_start_nothing(image, docker_client, key, message):
    marker = secrets.token_hex(8)
    done = qsandbox("run", "--token-stdin", str(SCRIPTS / "exit_with.py"), "0", marker, input=key + "\n")
    assert done.returncode == 2
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert _containers_with(docker_client, marker) == []


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "no API key source and no terminal to prompt on"),
        (["--token-env", "QS_NOT_SET"], {}, "environment variable QS_NOT_SET is not set"),
        (["--token-file", "/nonexistent/key"], {}, "cannot read the key file /nonexistent/key"),
        (["--token-command", "false"], {}, "--token-command exited with 1"),
        (["--token-stdin", "--token-env", "X"], {}, "give one key source, not --token-stdin and --token-env"),
    ],
)
def test_bad_sources_are_refused_and_start_nothing(docker_client, args, env, message):
    marker = secrets.token_hex(8)
    done = qsandbox("run", *args, str(SCRIPTS / "exit_with.py"), "0", marker, env=env)
    assert done.returncode == 2
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert _containers_with(docker_client, marker) == []


def test_token_command_and_file_sources(image, canary, tmp_path):
    keyfile = tmp_path / "key"
    keyfile.write_text(canary + "\n")
    want = hashlib.sha256(canary.encode()).hexdigest()
    for args in (["--token-file", str(keyfile)], ["--token-command", f"cat {keyfile}"]):
        done = qsandbox("run", *args, str(SCRIPTS / "inspect_account.py"))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1])["token_sha256"] == want


def test_missing_script_is_a_usage_error(docker_client):
    done = qsandbox("run", "--token-stdin", "/nonexistent/script.py", input="x" * 44 + "\n")
    assert done.returncode == 2
    assert error_lines(done.stderr) == [
        "qsandbox: script not found: /nonexistent/script.py: give the path of a Python file"
    ], done.stderr


@pytest.mark.skipif(
    bool(os.environ.get("QSANDBOX_TESTS_SHARED_ENGINE")),
    reason="`qsandbox sweep --all` removes every labelled object: on a shared engine, other people's live runs",
)
def test_sweep_removes_leftovers(image, docker_client):
    from qsandbox.launcher.core.settings import LABEL

    c = docker_client.containers.create(image, command=["probe"], labels={LABEL: "leftover-test"})
    n = docker_client.networks.create("qsandbox-leftover-test", labels={LABEL: "leftover-test"}, internal=True)
    done = qsandbox("sweep", "--all", "--yes")  # without --all, only what is older than a minute (test_command_line)
    assert done.returncode == 0, done.stderr
    assert f"removed container {c.name} (run leftover-test)" in done.stdout
    assert "removed network qsandbox-leftover-test (run leftover-test)" in done.stdout
    assert labelled(docker_client) == []
    del n


def test_hidden_prompt_on_a_terminal(image, canary, leak_search):
    """A user types the key at the prompt: it is not echoed, and it reaches the script."""
    import pty
    import select

    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the launcher, on a terminal
        argv = [sys.executable, "-m", "qsandbox", "run", str(SCRIPTS / "inspect_account.py")]
        os.execvpe(sys.executable, argv, env)  # noqa: S606 - our own interpreter, no shell
    screen = b""

    def read_until(marker: bytes, limit: float) -> None:
        nonlocal screen
        end = time.monotonic() + limit
        while marker not in screen and time.monotonic() < end:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    screen += os.read(fd, 4096)
                except OSError:
                    break

    read_until(b"(input hidden): ", 30)
    assert b"IBM Quantum API key (input hidden): " in screen
    os.write(fd, canary.encode() + b"\r")
    read_until(b"engine confirms", 90)
    _, status = os.waitpid(pid, 0)  # before closing the terminal, which would send SIGHUP
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, screen.decode(errors="replace")
    assert canary.encode() not in screen  # not echoed
    assert hashlib.sha256(canary.encode()).hexdigest().encode() in screen
    assert leak_search.all_hits() == []


def test_a_script_that_prints_its_key_is_redacted(image, canary, leak_search):
    from qsandbox.common.redact import forms

    done = qsandbox("run", "--token-stdin", str(SCRIPTS / "print_key.py"), input=canary + "\n")
    assert done.returncode == 0, done.stderr
    for form in forms(canary):
        assert form.decode() not in done.stdout + done.stderr
    assert "literal: ***" in done.stdout and "slow:***" in done.stdout and "stderr: ***" in done.stderr
    assert done.stdout.rstrip().endswith("done")
    assert leak_search.all_hits() == []


def test_no_redact_warns_loudly(image, canary):
    done = qsandbox("run", "--token-stdin", "--no-redact", str(SCRIPTS / "print_key.py"), input=canary + "\n")
    assert done.returncode == 0
    assert done.stderr.startswith("qsandbox: WARNING: --no-redact")
    assert f"literal: {canary}" in done.stdout


def test_audit_every_exit_path_finds_nothing(image):
    done = qsandbox("audit", timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in ("success", "error", "timeout", "sigint", "sigterm", "sighup", "sigkill"):
        assert f"exit path {path}: launcher exit " in done.stdout
    assert "NOT SEARCHED" not in done.stdout and "NOT TAKEN" not in done.stdout
    # Each path searched the live sandbox (found running, inspected) and the launcher, and after it
    # the data root: every one of them a place searched, not a place skipped.
    assert done.stdout.count("0 hit(s) in the live sandbox (inspect, top, diff): 1 searched") == 7
    assert done.stdout.count("0 hit(s) in the launcher's argv and environment (/proc): 2 searched") == 7
    assert done.stdout.count("0 hit(s) in engine data root") == 7
    assert done.stderr.strip().endswith("qsandbox: audit found 0 hit(s)")


def _next_said(lines: queue.Queue[str], timeout: float) -> str:
    """The next line from `lines` that is not a note about the machine; "" if none comes in time."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if not is_machine_note(line):
            return line
    return ""


def test_ctrl_z_says_what_suspending_means_and_a_short_suspension_is_survived(image, canary, popen):
    # Its own process group under this one, as a shell's job is: the kernel discards a stop signal
    # sent to an orphaned group, which is what a CI runner's background group may be.
    p = popen(
        [sys.executable, "-m", "qsandbox", "run", "--token-stdin", str(SCRIPTS / "sleep_forever.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    p.stdin.write(canary + "\n")
    p.stdin.close()
    p.stdin = None
    # stderr read as it comes, so that waiting for a line has a time limit (a launcher that stopped
    # without saying so would otherwise hold the test).
    seen: list[str] = []
    said: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in p.stderr:
            seen.append(line)
            said.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert p.stdout.readline().strip() == "sleeping"
        p.send_signal(signal.SIGTSTP)
        line = _next_said(said, 30)
        assert "qsandbox: suspended; the sandbox stops the script if the launcher stays stopped for 20 s" in line, line
        end = time.monotonic() + 30
        while Path(f"/proc/{p.pid}/stat").read_text().split(") ")[1][0] != "T":  # really stopped
            assert time.monotonic() < end, "the launcher said it was suspended but did not stop"
            time.sleep(0.02)
        # Durations of the scenario, not waits for something: stopped for 4 s (two missed
        # heartbeats, well within the 20 s), then running again for 3 s, in which a sandbox that
        # took the pause for a dead launcher would stop the script (and say so below).
        time.sleep(4)
        p.send_signal(signal.SIGCONT)
        time.sleep(3)
    finally:
        p.send_signal(signal.SIGCONT)  # a stopped launcher acts on no signal: SIGTERM would only wait
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
        reader.join(timeout=30)
    err = "".join(seen)
    assert p.returncode == 143, err
    assert "no word from the launcher" not in err
    closing = err.rstrip().splitlines()[-1]  # the last line, whatever the relay adds to it
    assert closing.startswith("qsandbox: run ") and "container and secret destroyed (engine confirms)" in closing


def test_the_script_runs_as_python_runs_it(image, canary):
    """The runner runs SCRIPT by hand, not through runpy (whose imports cost a no-op run more than
    the script itself): what the script sees of how it was started, and how its traceback reads, are
    what `python SCRIPT` gives in the same sandbox (as_python.py runs that there for comparison)."""
    done = qsandbox("run", "--token-stdin", str(SCRIPTS / "as_python.py"), input=canary + "\n")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    ours, python = seen["runner"], seen["python"]
    assert ours["argv0"] == "/work/as_python.py"  # python's argv[0] is the path as typed: its own
    del ours["argv0"], python["argv0"]
    assert ours == python
    assert ours["name"] == "__main__" and ours["main_is_this_module"] and ours["annotations"] == [True]

    failed = qsandbox("run", "--token-stdin", str(SCRIPTS / "as_python.py"), "raise", input=canary + "\n")
    assert failed.returncode == 1
    traceback = [line for line in error_lines(failed.stderr) if not line.startswith("qsandbox: run ")]
    assert traceback == seen["python_raise"].splitlines()  # no frame of qsandbox's, no runpy
