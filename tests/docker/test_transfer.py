"""Nothing of the host is mounted: what a sandbox sees of the host is what was sent, and /output comes back.

Each test runs the real launcher against the real engine, as root, with its script in a private
(0700) temporary directory, which a bind mount to a non-root sandbox user could not read.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import qsandbox

from qsandbox.launcher.core.settings import LABEL, sandbox_uid

LIST_WORK = """
import json, os
seen = sorted(os.path.relpath(os.path.join(r, f), "/work") for r, _, fs in os.walk("/work") for f in fs)
print(json.dumps({"seen": seen, "cwd": os.getcwd(), "uid": os.getuid()}))
"""


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A `mktemp -d` directory (mode 0700, owned by the user running the tests)."""
    d = Path(tempfile.mkdtemp(prefix="qsandbox-private-"))
    assert d.stat().st_mode & 0o777 == 0o700
    yield d
    shutil.rmtree(d)


def home_like(d: Path) -> Path:
    """A directory like a home: the script beside a private key and other files."""
    (d / ".ssh").mkdir()
    (d / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY----- not a real one\n")
    (d / "thesis.tex").write_text("private draft\n")
    (d / "bell.py").write_text(LIST_WORK)
    return d / "bell.py"


def created_since(client, t0: float) -> list[str]:
    """Names of qsandbox containers the engine created since t0 (events, so a container created
    and already removed counts too). CI runs tests one at a time, so any is this test's."""
    events = client.events(
        since=int(t0),
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": LABEL},
    )
    return [e["Actor"]["Attributes"].get("name", "?") for e in events]


def seen(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_a_script_beside_ssh_keys_sees_only_itself_even_as_root_in_a_private_dir(
    image, canary, private_dir, leak_search
):
    assert os.getuid() == 0, "the CI machine runs the suite as root, the case this test is about"
    script = home_like(private_dir)
    report = seen(qsandbox("run", "--token-stdin", str(script), input=canary + "\n"))
    assert report["seen"] == ["bell.py"]
    assert report["cwd"] == "/work"
    assert report["uid"] == sandbox_uid()  # as root: a uid no host account has
    assert leak_search.all_hits() == []


def test_workdir_sends_the_project_but_never_its_credential_stores(image, canary, private_dir):
    project = private_dir / "project"
    project.mkdir()
    script = home_like(project)
    (project / ".env").write_text("SECRET=1\n")
    done = qsandbox("run", "--token-stdin", "--workdir", str(project), str(script), input=canary + "\n")
    assert seen(done)["seen"] == ["bell.py", "thesis.tex"]
    assert "not sent into the sandbox: .ssh (a credential store: to send it on purpose, --include .ssh)" in done.stderr
    assert "not sent into the sandbox: .env (a credential store" in done.stderr


def test_include_keeps_relative_paths(image, canary, private_dir, docker_client):
    t0 = time.time()
    script = home_like(private_dir)
    (private_dir / "data").mkdir()
    (private_dir / "data" / "counts.json").write_text("{}")
    done = qsandbox("run", "--token-stdin", "--include", "data", str(script), input=canary + "\n")
    assert seen(done)["seen"] == ["bell.py", "data/counts.json"]
    assert created_since(docker_client, t0) != []  # the control: the search below does see a run's sandbox


def test_home_and_root_are_refused_before_anything_starts(image, canary, private_dir, docker_client):
    t0 = time.time()
    script = home_like(private_dir)
    done = qsandbox(
        "run",
        "--token-stdin",
        "--workdir",
        str(private_dir),
        str(script),
        input=canary + "\n",
        env={"HOME": str(private_dir)},
    )
    assert done.returncode == 2
    assert "refusing to send a whole home directory or / into the sandbox" in done.stderr
    assert created_since(docker_client, t0) == []


def test_an_input_holding_the_key_is_refused_before_the_key_is_sent(image, canary, private_dir, docker_client):
    t0 = time.time()
    script = home_like(private_dir)
    (private_dir / "config.ini").write_text(f"[ibm]\ntoken = {canary}\n")
    done = qsandbox("run", "--token-stdin", "--include", "config.ini", str(script), input=canary + "\n")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "qsandbox: config.ini holds the API key itself, so nothing was sent: remove the key from it "
        "(the script finds its account without it) or leave the file out"
    )
    assert created_since(docker_client, t0) == []


def test_input_limit(image, canary, private_dir):
    script = home_like(private_dir)
    (private_dir / "big.bin").write_bytes(b"\0" * 4096)
    done = qsandbox(
        "run", "--token-stdin", "--input-limit", "2k", "--include", "big.bin", str(script), input=canary + "\n"
    )
    assert done.returncode == 2
    assert "over the --input-limit of 2048" in done.stderr


def test_a_missing_data_file_names_include_and_workdir(image, canary, private_dir):
    (private_dir / "data.csv").write_text("1,2\n")
    script = private_dir / "analyse.py"
    script.write_text("print(open('data.csv').read())\n")
    done = qsandbox("run", "--token-stdin", str(script), input=canary + "\n")
    assert done.returncode == 1
    assert "FileNotFoundError" in done.stderr
    assert (
        "qsandbox: /work/data.csv is not in the sandbox: only the script is sent in; name what it needs with "
        "--include PATH (relative to the script's directory), or send a project with --workdir DIR"
    ) in done.stderr


HOSTILE_OUTPUT = """
import os, sys
os.makedirs("/output/sub", exist_ok=True)
open("/output/sub/ok.txt", "w").write("fine\\n")
os.symlink("/etc/passwd", "/output/outside-link")
os.symlink("sub/ok.txt", "/output/inside-link")
os.mkfifo("/output/fifo")
open("/output/setuid", "w").write("x")
os.chmod("/output/setuid", 0o4755)
try:
    with open("/output/huge", "wb") as f:
        f.write(b"\\0" * (2 << 20))
except OSError as e:
    print("huge:", e.strerror, flush=True)
print("done", flush=True)
"""


def test_hostile_output_is_refused_entry_by_entry_and_the_rest_delivered(image, canary, private_dir):
    script = private_dir / "hostile.py"
    script.write_text(HOSTILE_OUTPUT)
    out = private_dir / "out"
    done = qsandbox(
        "run", "--token-stdin", "--output", str(out), "--output-limit", "1m", str(script), input=canary + "\n"
    )
    assert done.returncode == 0, done.stderr
    assert "huge: No space left on device" in done.stdout  # the /output tmpfs stops at its size
    assert (out / "sub" / "ok.txt").read_text() == "fine\n"
    for name in ("outside-link", "inside-link", "fifo"):
        assert f"qsandbox: refused from /output: {name} (not a plain file or directory)" in done.stderr
        assert not os.path.lexists(out / name)
    assert (out / "setuid").exists() and not (out / "setuid").stat().st_mode & 0o6000
    assert not (out / "huge").exists() or (out / "huge").stat().st_size <= 1 << 20


@pytest.mark.parametrize(("how", "code"), [("timeout", 124), ("sigterm", 143), ("error", 1)])
def test_output_written_so_far_is_delivered_however_the_run_ends(image, canary, private_dir, popen, how, code):
    script = private_dir / "partial.py"
    script.write_text(
        "import sys, time\n"
        "open('/output/partial.txt', 'w').write('so far\\n')\n"
        "print('written', flush=True)\n"
        "if sys.argv[1] == 'error':\n    raise RuntimeError('boom')\n"
        "time.sleep(120)\n"
    )
    out = private_dir / "out"
    # No job to cancel, and no waiting on the platform for it: the test is about /output.
    argv = [sys.executable, "-m", "qsandbox", "run", "--token-stdin", "--no-cancel-on-abort", "--output", str(out)]
    argv += ["--timeout", "3"] if how == "timeout" else []
    proc = popen(
        [*argv, str(script), how], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(canary + "\n")
    proc.stdin.close()
    proc.stdin = None
    assert proc.stdout.readline().strip() == "written"
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert (out / "partial.txt").read_text() == "so far\n"
    assert f"qsandbox: /output: 1 entry delivered to {out}" in err
