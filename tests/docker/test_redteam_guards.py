"""Red team against the guards of issue 23: each attack run for real, each test asserting the SAFE
behaviour, so it passes while the guard holds.

Held from the start:
- the entry point (PID 1, non-dumpable) is out of the script's reach: /proc/1/task/<tid>/fd,
  mem, environ, map_files, cwd, root, ptrace; signals it does not handle do nothing; the script's
  interpreter holds no descriptor but its own pipes; no marker anywhere it can read;
- SIGTERM from the script to PID 1 takes the abort path and reports 143, nothing more;
- daemons (setsid, double fork), a process ignoring every signal and a zombie die with the
  launcher while the script runs;
- the terminal filter passes text and colour only (8-bit and UTF-8 C1, split UTF-8, OSC/DCS
  terminated oddly, long SGR); output made for its slow path keeps the launcher small;
- the Extractor against hand-made tar members ('.', duplicates, absolute, .., links, deep, setuid
  modes, sparse members whose real size is over the budget).

Broke at first, each fixed since and kept here as a test:
- a process that outlived the script kept writing into the entry point's stdout while it sent
  /output, injecting tar members of its own (no marker needed): now the entry point kills every
  other process of the sandbox (kill(-1) as PID 1) and passes nothing more of the script's on
  before the frame starts;
- one refusal message printed a sandbox-chosen name component unescaped: every refusal line is
  shown escaped now;
- a sparse /output file streamed its whole apparent size, past the budget, with the dead-man
  switch off: the entry point sends at most what /output can hold, the key files are deleted
  before the frame, EOF or silence or a failed write ends the sending, and a launcher that still
  receives more than any budget closes the stream;
- the terminal filter flattened SGR sub-parameters (':'): they are dropped now;
- the Extractor: a NUL in a pax name, an invalid header mid-archive and a huge declared size on a
  cut stream are each named, and end quickly;
- the entry point had /work first on its sys.path (`python -m`), so a module it imports late (the
  job cancel's datetime, on an abort) could come from the inputs, or from a lab's kernel, and run
  inside PID 1: /work is off its path before anything lands there.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import secrets
import select
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
from helpers import ROOT, qsandbox

from qsandbox.common.handoff import HEARTBEAT_TIMEOUT
from qsandbox.launcher.core.settings import LABEL
from qsandbox.launcher.run import transfer
from qsandbox.launcher.run.terminal import ControlFilter

HOSTILE = ROOT / "tests" / "hostile"
_SGR = re.compile(rb"\x1b\[[0-9;:]*m")


def _env(canary: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    env["QS_TEST_KEY"] = canary
    return env


def run(canary: str, script: str, *args: str, options: tuple[str, ...] = (), timeout: float = 180):
    return qsandbox(
        "run", "--token-stdin", *options, str(HOSTILE / script), *args, input=canary + "\n", timeout=timeout
    )


def _launch(canary: str, script: str, *args: str, options: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qsandbox", "run", "--token-env", "QS_TEST_KEY", *options, str(HOSTILE / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(canary),
    )


def _run_of(client, marker: str) -> str:
    (run_id,) = [c.labels[LABEL] for c in client.containers.list(filters={"label": LABEL}) if marker in c.attrs["Args"]]
    return run_id


def _containers(client, run_id: str) -> list[str]:
    from qsandbox.launcher.engine import sandbox

    return [n for n in sandbox.leftovers(client, run_id) if n.startswith("container ")]


def _remove_run(client, run_id: str) -> None:
    """What a killed launcher (or a sandbox that outlived it) leaves: removed by force."""
    import docker

    from qsandbox.launcher.engine import localplatform

    for name in (f"qsandbox-{run_id}", f"qsandbox-{run_id}-platform"):
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True)
    localplatform.remove_network(client, f"qsandbox-{run_id}")


def _gone_within(client, run_id: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while _containers(client, run_id) and time.monotonic() < end:
        time.sleep(0.2)
    return not _containers(client, run_id)


# -- the entry point is out of reach -------------------------------------------------------------


def test_the_entry_point_is_out_of_the_scripts_reach(image, canary):
    done = run(canary, "rt_reach_entry.py", options=("--platform", "local"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # The controls: on a child of its own the script opens, lists and traces; so a refusal on
    # PID 1 is the guard's (process_vm_readv, pidfd_getfd and kcmp are refused to both by seccomp).
    control = [line for line in lines if line.startswith("control ")]
    assert any(re.match(r"control OPENED /proc/\d+/task/\d+/fd/0$", line) for line in control), control
    assert any(re.match(r"control OPENED /proc/\d+/mem$", line) for line in control), control
    assert "control TRACED ptrace attach" in control
    entry = [line for line in lines if line.startswith("entry ")]
    assert len(entry) > 20, lines
    won = [line for line in entry if re.match(r"entry (OPENED|LISTED|READ|GOT|COMPARED|TRACED) ", line)]
    assert won == [], won
    fds = dict(item.split("=", 1) for item in next(x for x in lines if x.startswith("my fds: "))[8:].split())
    assert fds.pop("0") == "/dev/null"
    assert fds.pop("1") == fds.pop("2") == "pipe"
    assert list(fds.values()) in ([], ["pipe"]), fds  # at most the token pipe
    assert "32-hex strings readable: 0" in lines
    for name in ("SIGKILL", "SIGSTOP", "SIGUSR1", "SIGSEGV"):
        assert f"sent {name} to PID 1; still here" in lines
    assert lines[-1] == "done"
    assert done.stderr.splitlines()[-1].endswith("container and secret destroyed (engine confirms)")


def test_sigterm_from_the_script_to_pid_1_only_aborts_the_script(image, canary, tmp_path):
    script = tmp_path / "term_pid1.py"
    script.write_text(
        textwrap.dedent(
            """\
            import os, signal, time
            print("sending SIGTERM to PID 1", flush=True)
            try:
                for _ in range(120):  # again until it lands: PID 1 sets its handlers just after "go"
                    os.kill(1, signal.SIGTERM)
                    time.sleep(0.5)
            except KeyboardInterrupt:
                print("interrupted by the entry point", flush=True)
                raise
            """
        )
    )
    done = qsandbox("run", "--token-stdin", "--platform", "local", str(script), input=canary + "\n")
    assert done.returncode == 143, done.stderr
    assert "interrupted by the entry point" in done.stdout
    last = done.stderr.splitlines()[-1]
    assert " exit 143 in " in last and last.endswith("container and secret destroyed (engine confirms)")


def test_daemons_a_deaf_process_and_a_zombie_die_with_a_killed_launcher(image, canary, docker_client):
    marker = secrets.token_hex(8)
    proc = _launch(canary, "rt_outlive_launcher.py", marker, options=("--platform", "local"))
    run_id = None
    try:
        while (line := proc.stdout.readline()) and line.strip() != "sleeping":
            pass
        assert line.strip() == "sleeping", proc.communicate(timeout=60)[1]
        run_id = _run_of(docker_client, marker)
    finally:
        proc.kill()
        proc.communicate()
    try:
        assert _gone_within(docker_client, run_id, HEARTBEAT_TIMEOUT + 5), "the sandbox outlived its launcher"
    finally:
        _remove_run(docker_client, run_id)


# -- a process outliving the script speaks inside the /output frame -------------------------------


def test_a_daemon_cannot_write_into_the_output_frame(image, canary, tmp_path):
    out = tmp_path / "out"
    done = run(canary, "rt_inject_frame.py", "3000", options=("--platform", "local", "--output", str(out)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "armed: 3000 files" in done.stdout
    assert "\x1b" not in done.stderr and "\r" not in done.stderr, "raw terminal escapes in qsandbox's own lines"
    assert sorted(p.name for p in out.iterdir()) == ["real", "zz"]  # nothing injected
    assert len(os.listdir(out / "zz")) == 3000  # nothing cut short
    assert "damaged" not in done.stderr
    assert "/output: 3002 entries delivered" in done.stderr


# -- the Extractor against hand-made archives ----------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", pax: dict[str, str] | None = None) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, len(data), 0o644
    if pax:
        info.pax_headers = pax
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + data + b"\0" * (-len(data) % 512)


_END = b"\0" * (2 * tarfile.BLOCKSIZE)


def _extract(archive: bytes, dest: Path, limit: int = 1 << 20) -> tuple[list[str], list[str]]:
    refused: list[str] = []
    return transfer.extract(archive, dest, limit, refused), refused


def test_the_extractor_refuses_odd_members_by_name(tmp_path):
    dest = tmp_path / "out"
    sparse = tarfile.TarInfo("sparse")
    sparse.size = 512
    sparse.pax_headers = {"GNU.sparse.realsize": str(10**12), "GNU.sparse.numblocks": "1", "GNU.sparse.map": "0,512"}
    archive = b"".join(
        [
            _member(".", tarfile.DIRTYPE),
            _member("a", data=b"first"),
            _member("a", data=b"second"),
            _member("/tmp/abs-escape"),
            _member("x/../../up"),
            _member("link", tarfile.SYMTYPE, pax={"linkpath": "/etc/passwd"}),
            _member("hard", tarfile.LNKTYPE, pax={"linkpath": "a"}),
            _member("dev", tarfile.CHRTYPE),
            _member("/".join(["d"] * 70) + "/f"),
            _member("suid", data=b"s", pax={"mode": "6777"}),
            _member("ok", data=b"fine"),
            sparse.tobuf(tarfile.PAX_FORMAT) + b"A" * 512,  # last: its size stays counted against the budget
            _END,
        ]
    )
    delivered, refused = _extract(archive, dest)
    assert sorted(delivered) == ["a", "ok", "suid"]
    assert (dest / "a").read_bytes() == b"first"
    assert sorted(p.name for p in dest.iterdir()) == ["a", "ok", "suid"]
    assert (dest / "suid").stat().st_mode & 0o7111 == 0
    assert not Path("/tmp/abs-escape").exists()  # what an absolute name would write
    for why in (
        "a (already exists; not overwritten)",
        "/tmp/abs-escape (an absolute path or one with ..)",
        "x/../../up (an absolute path or one with ..)",
        "link (not a plain file or directory)",
        "hard (not a plain file or directory)",
        "dev (not a plain file or directory)",
        "(deeper than 64 levels)",
        "sparse and the rest (over the --output-limit of 1048576 bytes)",
    ):
        assert any(why in r for r in refused), (why, refused)


def test_every_refusal_shows_sandbox_chosen_names_escaped(tmp_path):
    part = "t\x1b]52;c;cHduZWQ=\x07\r\x1b[2Kforged\n\x1b[8m"
    _, refused = _extract(_member(part) + _member(part + "/x") + _END, tmp_path / "out")
    assert refused, "the control: the second member is refused"
    assert all(r.isprintable() for r in refused), refused


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_nul_in_a_pax_name_is_refused_and_the_rest_delivered(tmp_path):
    archive = _member("x", data=b"n", pax={"path": "a\0b"}) + _member("after", data=b"ok") + _END
    delivered, refused = _extract(archive, tmp_path / "out")
    assert delivered == ["after"], (delivered, refused)
    assert len(refused) == 1, refused


def test_a_damaged_header_in_the_middle_is_named(tmp_path):
    garbage = b"\x01" * tarfile.BLOCKSIZE
    archive = _member("one", data=b"1") + garbage + _member("two", data=b"2") + _END
    delivered, refused = _extract(archive, tmp_path / "out")
    assert delivered == ["one"]
    assert any("the rest of the archive" in r for r in refused), refused


def test_a_huge_declared_size_on_a_cut_stream_ends_quickly(tmp_path):
    code = textwrap.dedent(
        f"""\
        import tarfile
        from pathlib import Path
        from qsandbox.launcher.run import transfer
        info = tarfile.TarInfo("big")
        info.pax_headers = {{"size": str(10**15)}}
        refused, dest = [], Path({str(tmp_path / "out")!r})
        transfer.extract(info.tobuf(tarfile.PAX_FORMAT) + b"\\0" * 1024, dest, 1 << 20, refused)
        print("done", refused)
        """
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the extraction of a 1 KiB archive was still running after 30 s")
    assert done.stdout.startswith("done"), done.stderr
    assert "over the --output-limit" in done.stdout


# -- /output that claims to be huge --------------------------------------------------------------


def test_the_run_ends_soon_after_the_script_however_large_output_claims_to_be(image, canary, docker_client, tmp_path):
    marker = secrets.token_hex(8)
    out = tmp_path / "out"
    options = ("--platform", "local", "--output", str(out), "--output-limit", "1m")
    started = time.monotonic()
    proc = _launch(canary, "rt_sparse_output.py", str(10**15), marker, options=options)
    try:
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - started
    except subprocess.TimeoutExpired:
        took = None
        proc.send_signal(signal.SIGINT)  # what the user would do; the launcher tears down after its grace
        _, err = proc.communicate(timeout=120)
    assert took is not None, "the launcher was still busy 60 s after a script that took a few seconds"
    assert proc.returncode == 0, err
    assert "more than /output holds (a sparse file?); left out" in err


def test_a_sandbox_sending_output_does_not_outlive_a_killed_launcher(image, canary, docker_client, tmp_path):
    marker = secrets.token_hex(8)
    options = ("--platform", "local", "--output", str(tmp_path / "out"))
    proc = _launch(canary, "rt_sparse_output.py", str(10**15), "daemon", marker, options=options)
    run_id = None
    try:
        line = proc.stdout.readline()
        assert "/output/huge.bin: 1000000000000000 bytes apparent, 0 allocated" in line, proc.communicate(timeout=60)
        run_id = _run_of(docker_client, marker)
        time.sleep(5)  # the entry point waits 2 s for the script's stdout, then streams /output
    finally:
        proc.kill()
        proc.communicate()
    try:
        assert _gone_within(docker_client, run_id, HEARTBEAT_TIMEOUT + 5), (
            f"the sandbox outlived its launcher by {HEARTBEAT_TIMEOUT + 5:.0f} s"
        )
    finally:
        _remove_run(docker_client, run_id)


# -- the terminal --------------------------------------------------------------------------------


def _filtered(*chunks: bytes) -> bytes:
    f = ControlFilter()
    return b"".join(f.feed(c) for c in chunks) + f.flush()


def _only_text_and_colour(out: bytes) -> bool:
    rest = _SGR.sub(b"", out).decode()
    return all(ch in "\n\t" or (ch >= " " and not "\x7f" <= ch <= "\x9f") for ch in rest)


def test_the_terminal_filter_passes_text_and_colour_only():
    cases = [
        b"\x9b2J\x9d0;t\x07",  # 8-bit C1 bytes (not UTF-8)
        "\x9b2J\x9d0;t\x07\x90q\x9c".encode(),  # C1 controls as UTF-8
        b"\x1b]0;title\x1b\\after",  # OSC ended by ST
        b"\x1b]52;c;ZWNobw==\x1b\x1b\\x\x07after",  # ESC ESC inside a string
        b"\x1bP+q544e\x1b\\\x1b_apc\x07\x1b^pm\x07\x1bXsos\x07",
        b"\x1b[" + b"1;" * 200 + b"31mlong",  # SGR parameters past the limit
        b"\x1b[?1049h\x1b[>4;2m\x1b[1 q\x1b[6n\x1b[2J\x1b[H",
        b"\x1b(0lqk\x1b(B\x1b#8\x1b7\x1b8\x1bc",
        b"\x1b[31\x18m\x1a\x1b[8m\x1b[5m\x1b[6mhidden?",  # CAN/SUB mid-sequence, conceal, blink
        b"\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\",  # hyperlink
        b"a\rb\x08c\x7fd\x07e\x00f\x0bg\x0ch",
    ]
    for case in cases:
        whole = _filtered(case)
        split = _filtered(*(case[i : i + 1] for i in range(len(case))))  # one byte at a time
        assert whole == split, case
        assert _only_text_and_colour(whole), (case, whole)
        for seq in _SGR.findall(whole):
            assert not {b"5", b"6", b"8"} & set(re.split(rb"[;:]", seq[2:-1])), (case, whole)
    assert _filtered("€".encode()[:2], "€".encode()[2:]) == "€".encode()  # split UTF-8 is joined
    assert _filtered(b"\x1b]0;never ends" + b"x" * 100_000) == b""


@pytest.mark.parametrize("params", ["38:5;8", "38:5;5", "48:2;8;8;8", "58:5;6"])
def test_colour_sub_parameters_cannot_smuggle_conceal_or_blink(params):
    out = _filtered(f"\x1b[{params}mtext\x1b[0m".encode())
    assert f"\x1b[{params}m".encode() not in out, out


def test_output_made_for_the_filters_slow_path_keeps_the_launcher_small(image, canary, tmp_path):
    usage = tmp_path / "usage"
    wrapper = (
        "import resource, subprocess, sys\n"
        "code = subprocess.call(sys.argv[2:])\n"
        "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "open(sys.argv[1], 'w').write(f'{ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}')\n"
        "sys.exit(code)\n"
    )
    main, sub = pty.openpty()
    launcher = [sys.executable, "-m", "qsandbox", "run", "--token-env", "QS_TEST_KEY", "--platform", "local"]
    proc = subprocess.Popen(
        [sys.executable, "-c", wrapper, str(usage), *launcher, str(HOSTILE / "rt_filter_flood.py"), "32"],
        stdin=subprocess.DEVNULL,
        stdout=sub,
        stderr=sub,
        env=_env(canary),
    )
    os.close(sub)
    seen = bytearray()
    try:
        while select.select([main], [], [], 180)[0]:
            try:
                chunk = os.read(main, 1 << 16)
            except OSError:  # EIO: every writer closed the pty
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(main)
        code = proc.wait(60)
    assert code == 0, bytes(seen[-2000:])
    rss_kb, cpu = usage.read_text().split()
    assert int(rss_kb) < 150 * 1024, f"launcher peak RSS {int(rss_kb) // 1024} MiB"
    assert float(cpu) < 60, f"launcher CPU {cpu} s for 32 MiB"
    text = bytes(seen).replace(b"\r\n", b"\n")
    assert re.search(rb"written 335\d{5}\n", text)
    assert _only_text_and_colour(text), "a control other than colour reached the terminal"
    last = text.decode(errors="replace").rstrip("\n").split("\n")[-1].removeprefix("\x1b[0m")
    assert last.startswith("qsandbox: run ") and last.endswith("container and secret destroyed (engine confirms)")


def test_the_entry_point_imports_nothing_from_work(image, canary):
    """Broke at first: `python -m` put /work first on the entry point's sys.path, and the entry point
    imports more after the inputs have landed there (the job cancel on abort imports datetime; a lab's
    kernel can write /work). A datetime.py among the inputs ran inside PID 1, which holds the stream.
    Control: the script's own `import datetime` does find it (python's rules for a script)."""
    shadow = HOSTILE / "shadow"
    done = qsandbox(
        "run", "--token-stdin", "--workdir", str(shadow), "--timeout", "3", str(shadow / "main.py"),
        input=canary + "\n",
    )  # fmt: skip
    assert done.returncode == 124, done.stderr
    assert "control: the script's import found /work/datetime.py" in done.stdout
    imported_by = re.findall(r"shadow datetime.py imported by pid (\d+)", done.stderr)
    assert imported_by and "1" not in imported_by, done.stderr  # the script's import only, never PID 1's
    assert "Traceback" not in done.stderr, done.stderr
