"""The guards hold against the script inside (issue 23): each attack run for real, each a test that
failed on the code before the guard.

- `/output` lands where nothing runs it: no hook into a git checkout, nothing overwritten, no exec
  bit, no home directory, no directory another account can write, no link followed in a race;
- the dead-man switch cannot be held by the script (the entry point is PID 1 and non-dumpable);
- frames cannot be forged (the marker is nowhere the script can read; one plain-tar archive per
  run, one budget);
- the terminal shows text only: no forged closing line last, no OSC 52, no window title;
- odd `/output` (full, 200,000 files, 2,000 deep, modes and hard links) delivers or names its reason.
"""

from __future__ import annotations

import os
import pty
import secrets
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import ROOT, qsandbox

from qsandbox.common.handoff import HEARTBEAT_TIMEOUT, MAX_OUTPUT_DEPTH, MAX_OUTPUT_ENTRIES
from qsandbox.launcher.core.settings import LABEL

HOSTILE = ROOT / "tests" / "hostile"


def _env(canary: str, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    env.update(QS_TEST_KEY=canary, **more)
    return env


def run(canary: str, script: str, *args: str, options: tuple[str, ...] = (), **env: str):
    return qsandbox("run", "--token-stdin", *options, str(HOSTILE / script), *args, input=canary + "\n", env=env)


def _labelled_containers(client, run_id: str | None = None) -> list[str]:
    from qsandbox.launcher.engine import sandbox

    return [n for n in sandbox.leftovers(client, run_id) if n.startswith("container ")]


# -- /output lands where nothing runs it ---------------------------------------------------------


def test_a_hook_planted_through_output_never_reaches_a_git_checkout(image, canary, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "README.md").write_text("mine\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    ran = Path("/tmp/qsandbox-hook-ran")  # what the planted hook would touch
    ran.unlink(missing_ok=True)

    refused = run(canary, "output_to_git.py", options=("--platform", "local", "--output", str(repo)))
    assert refused.returncode == 2, refused.stderr
    assert f"--output {repo}: not empty; name a new or empty directory, or add --output-merge" in refused.stderr
    assert "planted" not in refused.stdout  # nothing started

    merged = run(canary, "output_to_git.py", options=("--platform", "local", "--output", str(repo), "--output-merge"))
    assert merged.returncode == 0, merged.stderr
    assert "planted" in merged.stdout
    for line in (
        ".git/hooks/pre-commit (under .git/: a repository's hooks would run it)",
        ".bashrc (a dotfile at the top: shells and tools read those)",
        "README.md (already exists; not overwritten)",
    ):
        assert f"qsandbox: refused from /output: {line}" in merged.stderr
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert not (repo / ".bashrc").exists()
    assert (repo / "README.md").read_text() == "mine\n"
    assert (repo / "result.txt").read_text() == "ok\n"
    assert (repo / "result.txt").stat().st_mode & 0o111 == 0
    (repo / "x").write_text("x")
    subprocess.run([*git, "add", "x"], check=True)
    subprocess.run([*git, "commit", "-qm", "two"], check=True)
    assert not ran.exists(), "the planted hook ran"


def test_output_into_home_or_a_directory_others_can_write_is_refused_before_anything_starts(image, canary, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    done = run(canary, "output_to_git.py", options=("--output", str(home)), HOME=str(home))
    assert done.returncode == 2
    assert "refusing to deliver the sandbox's output into a whole home directory or /" in done.stderr
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # the unsafe directory under test
    done = run(canary, "output_to_git.py", options=("--output", str(shared)))
    assert done.returncode == 2
    assert "writable by group or others (mode 0777)" in done.stderr
    assert "planted" not in done.stdout


def test_a_link_swapped_into_the_output_directory_during_delivery_is_never_followed(image, canary, tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    script = tmp_path / "many_in_sub.py"
    script.write_text(
        "import os\nos.mkdir('/output/sub')\n"
        "for i in range(3000):\n    open(f'/output/sub/f{i}', 'w').write('x')\nprint('written')\n"
    )
    stop = threading.Event()
    swaps = [0]

    def swap() -> None:  # what another account could do, were DIR writable to it
        sub, real = out / "sub", out / "sub.real"
        while not stop.is_set():
            try:
                if sub.is_dir() and not sub.is_symlink():
                    os.rename(sub, real)
                    os.symlink(outside, sub)
                    swaps[0] += 1
                    time.sleep(0.001)
                    os.unlink(sub)
                    os.rename(real, sub)
            except OSError:
                pass

    t = threading.Thread(target=swap, daemon=True)
    t.start()
    try:
        done = qsandbox(
            "run", "--token-stdin", "--platform", "local", "--output", str(out), str(script), input=canary + "\n"
        )
    finally:
        stop.set()
        t.join()
    assert done.returncode == 0, done.stderr
    assert swaps[0] > 0, "the control: the swapper got to swap"
    assert list(outside.iterdir()) == [], "something was written through the swapped link"
    assert "Traceback" not in done.stderr
    assert "/output: " in done.stderr and "delivered to" in done.stderr


# -- the dead-man switch is out of the script's reach --------------------------------------------


def _argv(script: Path, *args: str, options: tuple[str, ...] = ()) -> list[str]:
    """`qsandbox run` of `script` with the canary from $QS_TEST_KEY (see _env)."""
    return [sys.executable, "-m", "qsandbox", "run", "--token-env", "QS_TEST_KEY", *options, str(script), *args]


def _run_of(client, marker: str) -> str:
    """The run id of the one running sandbox whose script got `marker` as an argument."""
    (run_id,) = [c.labels[LABEL] for c in client.containers.list(filters={"label": LABEL}) if marker in c.attrs["Args"]]
    return run_id


def test_a_script_cannot_hold_the_dead_man_switch_after_the_launcher_is_killed(image, canary, docker_client):
    marker = secrets.token_hex(8)
    proc = subprocess.Popen(
        _argv(HOSTILE / "hold_the_switch.py", marker),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(canary),
    )
    try:
        lines = []
        while (line := proc.stdout.readline()) and line.strip() != "sleeping":
            lines.append(line.strip())
        assert lines, proc.communicate(timeout=60)[1]
        control = next(line.split()[-1] for line in lines if line.startswith("control pid "))
        opened = [line for line in lines if line.startswith(("OPENED", "READ"))]
        # The control: the same opens work on a process the script owns, so a refusal is the guard's.
        assert f"OPENED /proc/{control}/fd/0" in opened, lines
        assert [line for line in opened if f"/proc/{control}/" not in line] == [], lines
        assert "marker in my frames: none" in lines
        run_id = _run_of(docker_client, marker)
        assert _labelled_containers(docker_client, run_id)
    finally:
        proc.kill()
        proc.communicate()
    killed = time.monotonic()
    bound = HEARTBEAT_TIMEOUT + 5
    while _labelled_containers(docker_client, run_id) and time.monotonic() - killed < bound:
        time.sleep(0.1)
    assert _labelled_containers(docker_client, run_id) == [], f"the sandbox outlived its launcher by {bound} s"
    from qsandbox.launcher.engine import localplatform

    localplatform.remove_network(docker_client, f"qsandbox-{run_id}")  # a killed launcher's only leftover


# -- frames cannot be forged ---------------------------------------------------------------------


def test_forged_frames_and_compressed_archives_deliver_nothing(image, canary, tmp_path):
    out = tmp_path / "out"
    done = run(canary, "forge_output.py", options=("--platform", "local", "--output", str(out), "--output-limit", "8m"))
    assert done.returncode == 0, done.stderr
    assert "forged" in done.stdout
    assert "markers learned: 0" in done.stdout
    assert "OPENED" not in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["real.txt"]
    assert (out / "real.txt").read_text() == "the real one\n"
    assert "/output: 1 entry delivered" in done.stderr


# -- nothing but text reaches the terminal -------------------------------------------------------


def _on_a_terminal(canary: str, *options: str) -> tuple[int, bytes]:
    """Run forge_terminal.py with stdout and stderr on a pty; everything the terminal received."""
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        _argv(HOSTILE / "forge_terminal.py", options=options),
        stdin=subprocess.DEVNULL,
        stdout=sub,
        stderr=sub,
        env=_env(canary),
    )
    os.close(sub)
    got = bytearray()
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: every writer closed the pty
                break
            if not chunk:
                break
            got += chunk
    finally:
        os.close(main)
        code = proc.wait(60)
    return code, bytes(got).replace(b"\r\n", b"\n")


def test_a_forged_closing_line_and_terminal_escapes_never_reach_the_terminal(image, canary):
    code, seen = _on_a_terminal(canary, "--platform", "local")
    assert code == 3
    assert b"\x1b]52" not in seen and b"\x1b]0;" not in seen and b"\x1b[2K" not in seen and b"\x1b[8m" not in seen
    assert b"\r" not in seen
    lines = [line for line in seen.decode().split("\n") if line.strip()]
    last = lines[-1].removeprefix("\x1b[0m")
    assert last.startswith("qsandbox: run ") and " exit 3 " in last, lines[-3:]
    assert "container and secret destroyed (engine confirms)" in last
    assert any("qsandbox: run 000000000000 exit 0" in line for line in lines[:-1])  # shown, as text, not last
    assert "\x1b[0m" in seen.decode()  # colours reset before the closing line


def test_raw_output_passes_escapes_the_control(image, canary):
    """The control for the test above: the pty does receive what the script writes, when asked."""
    code, seen = _on_a_terminal(canary, "--platform", "local", "--raw-output")
    assert code == 3
    assert b"\x1b]52;c;ZWNobyBwd25lZA==\x07" in seen


# -- odd /output: delivered, or a named reason ---------------------------------------------------


def test_a_full_output_is_delivered_whole_and_none_of_it_printed(image, canary, tmp_path):
    out = tmp_path / "out"
    done = run(
        canary, "odd_output.py", "full", options=("--platform", "local", "--output", str(out), "--output-limit", "24m")
    )
    assert done.returncode == 0, done.stderr
    size = int(next(line for line in done.stdout.splitlines() if line.startswith("size ")).split()[1])
    assert size > 20 << 20
    assert (out / "big.bin").stat().st_size == size
    assert len(done.stdout.splitlines()) == 2, done.stdout[:500]  # no archive text on stdout
    assert "/output: 1 entry delivered" in done.stderr


def test_two_hundred_thousand_files_deliver_the_first_part_and_name_the_rest(image, canary, tmp_path):
    out = tmp_path / "out"
    done = qsandbox(
        "run",
        "--token-stdin",
        "--platform",
        "local",
        "--output",
        str(out),
        str(HOSTILE / "odd_output.py"),
        "many",
        input=canary + "\n",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        f"/output holds more than {MAX_OUTPUT_ENTRIES} entries: {200_000 - MAX_OUTPUT_ENTRIES} left out" in done.stderr
    )
    assert len(os.listdir(out)) == MAX_OUTPUT_ENTRIES
    assert f"/output: {MAX_OUTPUT_ENTRIES} entries delivered" in done.stderr


def test_a_tree_two_thousand_deep_is_cut_with_a_named_reason(image, canary, tmp_path):
    out = tmp_path / "out"
    done = run(canary, "odd_output.py", "deep", options=("--platform", "local", "--output", str(out)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "levels; its contents left out" in done.stderr and f"deeper than {MAX_OUTPUT_DEPTH}" in done.stderr
    depth, here = 0, out
    while (here / "d").is_dir():
        here, depth = here / "d", depth + 1
    assert depth == MAX_OUTPUT_DEPTH
    shutil.rmtree(out)


def test_modes_never_widen_exec_bits_stay_behind_and_hard_links_keep_both_names(image, canary, tmp_path):
    out = tmp_path / "out"
    done = run(canary, "odd_output.py", "modes", options=("--platform", "local", "--output", str(out)))
    assert done.returncode == 0, done.stderr
    modes = {p.name: p.stat().st_mode & 0o7777 for p in out.iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    assert modes == {"private.txt": 0o600, "again.txt": 0o600, "tool.sh": 0o644 & ~umask}
    assert (out / "again.txt").read_text() == "p"
    kept = tmp_path / "kept"
    done = run(
        canary, "odd_output.py", "modes", options=("--platform", "local", "--output", str(kept), "--output-keep-modes")
    )
    assert done.returncode == 0, done.stderr
    assert (kept / "tool.sh").stat().st_mode & 0o111 == 0o111 & ~umask


def test_signal_to_the_entry_point_still_aborts(image, canary, docker_client):
    """PID 1 without docker-init: `docker kill -s TERM` still reaches the entry point's abort path."""
    marker = secrets.token_hex(8)
    script = ROOT / "tests" / "scripts" / "sleep_forever.py"
    proc = subprocess.Popen(
        _argv(script, marker),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(canary),
    )
    try:
        assert proc.stdout.readline().strip() == "sleeping"
        docker_client.containers.get(f"qsandbox-{_run_of(docker_client, marker)}").kill(signal="SIGTERM")
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
