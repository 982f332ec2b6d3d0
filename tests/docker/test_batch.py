"""`qsandbox batch` against the real engine: isolation between its scripts, reports, signals, options."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker.errors
import jsonschema
import pytest
from helpers import ROOT, qsandbox
from junitparser import JUnitXml

from qsandbox.common.redact import forms
from qsandbox.launcher.checks.audit import canary as new_canary
from qsandbox.launcher.engine import sandbox
from qsandbox.launcher.run.report import SCHEMA_FILE

SCHEMA = json.loads(SCHEMA_FILE.read_text())
SCRIPTS = ROOT / "tests" / "scripts"
# The emulated platform: these scripts call no IBM service, and one emulator serves each batch (so
# every test also covers the per-batch platform). Works the same with --platform ibm.
LOCAL = ("--platform", "local")
FIND_OTHER = (ROOT / "tests" / "hostile" / "find_other_key.py").read_text()
MATCHER = FIND_OTHER[FIND_OTHER.index("# --- key matcher") : FIND_OTHER.index("# --- end of key matcher")]

# Each script holds its own canary (in its text, so in /work, and in a /tmp file it writes), waits
# so that its neighbours are live too, then searches everything it can read for any of the others'
# (known only by SHA-256), and, as a positive control, for its own.
HOLDER = """
import base64, hashlib, os, re, sys, time, urllib.parse
MINE = {mine!r}
OTHERS = {others!r}
{matcher}
class AnyOf:
    def __init__(self, digests):
        self.digests = {{bytes.fromhex(d) for d in digests}}
    def __eq__(self, other):  # bytes == AnyOf(...) falls back to this
        return other in self.digests
    __hash__ = None

def search(target, roots):
    found, looked = [], 0
    _SEEN.clear()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath.startswith("/proc/") and dirpath.count("/") > 3:
                dirnames[:] = []
            for name in filenames:
                if root == "/proc" and name not in ("environ", "cmdline"):
                    continue
                path = os.path.join(dirpath, name)
                _SEEN.clear()  # it skips what it has seen anywhere: every file holding the key is wanted
                try:
                    hit = file_holds_key(path, target)
                except OSError:
                    continue
                looked += 1
                if hit:
                    found.append(path)
    return looked, found

print("window start", time.time(), flush=True)
with open("/tmp/held.txt", "w") as f:
    f.write(MINE)
time.sleep(2.0)
roots = ["/proc", "/run", "/home", "/tmp", "/dev/shm", "/work", "/etc", "/output"]
looked, others = search(AnyOf(OTHERS), roots)
print(f"looked at {{looked}} files; other key found: {{bool(others)}}", *others)
looked, own = search(AnyOf([hashlib.sha256(MINE.encode()).hexdigest()]), roots)
print(f"own key found: {{sorted(own)}}")
print("window end", time.time(), flush=True)
"""


def _blocks(stdout: str) -> dict[str, str]:
    """Each script's output, read by the rule of batch stdout: a line `LABEL | text` is LABEL's run's
    (labels padded to line up); every other line is qsandbox's own, `===== ` to ` =====`."""
    found: dict[str, list[str]] = {}
    for line in stdout.split("\n")[:-1]:
        label, bar, text = line.partition(" | ")
        if bar and not line.startswith("===== "):
            found.setdefault(label.rstrip(), []).append(text)
        else:
            assert re.fullmatch(r"===== \S+(: .+)? =====", line), line
    return {label: "".join(t + "\n" for t in texts) for label, texts in found.items()}


def _labelled(docker_client, filters: dict) -> list:
    """Labelled containers now; one removed while the engine lists them is simply not there."""
    try:
        return docker_client.containers.list(filters={"label": sandbox.LABEL, **filters})
    except docker.errors.NotFound:
        return []


def _check_reports(report: Path, junit: Path, count: int) -> dict:
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert len(doc["runs"]) == count
    suite = next(iter(JUnitXml.fromfile(str(junit))))
    assert suite.tests == count
    return doc


def _gone(docker_client, doc: dict) -> None:
    """The engine confirms: nothing left of any run, nor of the batch itself (positive control in
    the local-platform test, where the batch's emulator is found while it runs)."""
    ids = [r["run_id"] for r in doc["runs"] if r["run_id"]] + [doc["batch_id"]]
    assert {i: sandbox.leftovers(docker_client, i) for i in ids} == {i: [] for i in ids}


def test_sixteen_scripts_four_at_a_time_none_finds_another_ones_canary(image, canary, docker_client, tmp_path):
    canaries = [new_canary() for _ in range(16)]
    digests = [hashlib.sha256(c.encode()).hexdigest() for c in canaries]
    scripts = []
    for i, mine in enumerate(canaries):
        p = tmp_path / f"holder{i:02d}.py"
        others = [d for j, d in enumerate(digests) if j != i]
        p.write_text(HOLDER.format(mine=mine, others=others, matcher=MATCHER))
        scripts.append(str(p))
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    done = qsandbox(
        "batch", "-j", "4", *LOCAL, "--token-stdin", "--json", str(report), "--junit", str(junit), *scripts,
        input=canary + "\n", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    blocks = _blocks(done.stdout)
    assert sorted(blocks) == sorted(scripts)  # every script's output is one block
    windows = []
    for i, script in enumerate(scripts):
        lines = blocks[script].splitlines()
        assert any(line.startswith("looked at ") and line.endswith("other key found: False") for line in lines), lines
        own = next(line for line in lines if line.startswith("own key found: "))
        assert "/tmp/held.txt" in own and f"/work/holder{i:02d}.py" in own, own  # the search finds a key
        start = float(next(line for line in lines if line.startswith("window start")).split()[2])
        end = float(next(line for line in lines if line.startswith("window end")).split()[2])
        windows.append((start, end))
    # Scripts really ran side by side, never more than -j at once.
    most = max(sum(s <= t < e for s, e in windows) for t, _ in windows)
    assert 2 <= most <= 4, windows
    doc = _check_reports(report, junit, 16)
    assert all(r["passed"] and r["cleaned_up"] for r in doc["runs"])
    assert len({r["run_id"] for r in doc["runs"]}) == 16  # a fresh sandbox each
    assert doc["exit_code"] == 0 and doc["ended"] == "exited"
    assert "qsandbox: batch " in done.stderr and ": 16 scripts: 16 passed, 0 failed, 0 not run" in done.stderr
    _gone(docker_client, doc)
    for place in (report.read_bytes(), junit.read_bytes(), done.stdout.encode()):
        assert [f for f in forms(canary) if f in place] == []  # the batch's own key, in no form


def test_reports_and_output_are_redacted(image, canary, tmp_path):
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    script = str(SCRIPTS / "print_key.py")
    done = qsandbox(
        "batch", *LOCAL, "--token-stdin", "--json", str(report), "--junit", str(junit), script,
        input=canary + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = _check_reports(report, junit, 1)
    assert "literal: ***" in doc["runs"][0]["output"] and "done" in doc["runs"][0]["output"]
    for name, data in (("json", report.read_bytes()), ("junit", junit.read_bytes()), ("stdout", done.stdout.encode())):
        assert [f for f in forms(canary) if f in data] == [], name
    # Positive control: with --no-redact the same search finds the key in both reports.
    done = qsandbox(
        "batch", *LOCAL, "--token-stdin", "--no-redact", "--json", str(report), "--junit", str(junit), script,
        input=canary + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for data in (report.read_bytes(), junit.read_bytes()):
        assert [f for f in forms(canary) if f in data]
    # `qsandbox run --json --junit`: validates, carries the masked output and the image, holds no form of the key.
    done = qsandbox(
        "run", *LOCAL, "--token-stdin", "--json", str(report), "--junit", str(junit), script, input=canary + "\n"
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["command"] == "run" and doc["runs"][0]["cleaned_up"] is True and doc["runs"][0]["exit_code"] == 0
    assert doc["image_id"].startswith("sha256:") and doc["runs"][0]["started_at"]
    (case,) = [c for suite in JUnitXml.fromfile(str(junit)) for c in suite]
    assert "literal: ***" in case.system_out  # what the terminal showed, masked
    for data in (report.read_bytes(), junit.read_bytes()):
        assert [f for f in forms(canary) if f in data] == []


@pytest.mark.parametrize(
    ("sig", "code", "reason"), [(signal.SIGINT, 130, "interrupt"), (signal.SIGTERM, 143, "terminate")]
)
def test_signal_mid_batch_tears_down_every_sandbox(image, canary, docker_client, tmp_path, popen, sig, code, reason):
    scripts = []
    for i in range(6):
        p = tmp_path / f"sleeper{i}.py"
        p.write_text((SCRIPTS / "sleep_forever.py").read_text())
        scripts.append(str(p))
    report = tmp_path / "r.json"
    before = {c.id for c in docker_client.containers.list(all=True, filters={"label": sandbox.LABEL})}
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    proc = popen(
        [sys.executable, "-m", "qsandbox", "batch", "-j", "3", *LOCAL, "--token-stdin", "--json", str(report),
         *scripts],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    proc.stdin.write(canary + "\n")
    proc.stdin.close()
    proc.stdin = None  # communicate() below must not flush it
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while len(seen) < 6 and time.monotonic() < deadline:  # 3 running, 3 made ready ahead (--ahead 3)
        running = _labelled(docker_client, {"status": "running"})
        mine = [c for c in running if c.id not in before and c.name == f"qsandbox-{c.labels[sandbox.LABEL]}"]
        seen |= {c.labels[sandbox.LABEL] for c in mine}
        time.sleep(0.2)
    assert len(seen) >= 6, "six sandboxes were never live at once"
    time.sleep(3)  # the scripts are running
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=90)
    assert proc.returncode == code, err
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["ended"] == reason and doc["exit_code"] == code
    ended = sorted(r["ended"] for r in doc["runs"])
    assert ended == sorted([reason] * 3 + ["not-run"] * 3), doc["runs"]
    assert {r["run_id"] for r in doc["runs"] if r["run_id"]} <= seen  # seen live (others' runs may add to seen)
    assert all(r["cleaned_up"] for r in doc["runs"] if r["run_id"])
    _gone(docker_client, doc)
    assert f"qsandbox: batch {reason}: ending every live sandbox" in err


def test_local_platform_inputs_outputs_timeout_and_revoke_after_the_last(image, docker_client, tmp_path, popen):
    for d, text in (("a", "from a"), ("b", "from b"), ("c", "from c")):
        (tmp_path / d).mkdir()
        (tmp_path / d / "data.txt").write_text(text)
    job = 'import pathlib\npathlib.Path("/output/got.txt").write_text(open("data.txt").read())\nprint("copied")\n'
    (tmp_path / "a" / "one.py").write_text(job)
    (tmp_path / "b" / "two.py").write_text(job)
    (tmp_path / "c" / "slow.py").write_text((SCRIPTS / "sleep_forever.py").read_text())
    bell = tmp_path / "c" / "bell.py"
    bell.write_text((ROOT / "examples" / "bell.py").read_text())
    report, out = tmp_path / "r.json", tmp_path / "out"
    scripts = [str(tmp_path / p) for p in ("a/one.py", "b/two.py", "c/slow.py", "c/bell.py")]
    batch_ids: set[str] = set()
    proc = popen(
        [sys.executable, "-m", "qsandbox", "batch", "--platform", "local", "-j", "4", "--include", "data.txt",
         "--output", str(out), "--timeout", "25", "--revoke-after", "--json", str(report), *scripts],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    emulators: set[str] = set()
    while proc.poll() is None:  # watch for emulators: one for the batch, none per run
        for c in _labelled(docker_client, {}):
            if c.name.endswith("-platform") and c.name != "qsandbox-platform":
                emulators.add(c.labels[sandbox.LABEL])
        time.sleep(0.3)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 1, stderr  # slow.py timed out
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, SCHEMA)
    runs = {Path(r["script"]).name: r for r in doc["runs"]}
    assert {n: (r["exit_code"], r["ended"]) for n, r in runs.items()} == {
        "one.py": (0, "exited"),
        "two.py": (0, "exited"),
        "slow.py": (124, "timeout"),
        "bell.py": (0, "exited"),
    }
    assert (out / "one" / "got.txt").read_text() == "from a"  # --include relative to each script
    assert (out / "two" / "got.txt").read_text() == "from b"
    batch_ids.add(doc["batch_id"])
    # One emulator, the batch's (seen while it ran: the positive control), none per run (others' tests
    # on this engine may start emulators of their own meanwhile).
    assert batch_ids <= emulators and not emulators & {r["run_id"] for r in doc["runs"]}
    assert stderr.count("qsandbox: API key revoked (") == 1  # once, after the last script
    assert doc["revocation"]["ok"] is True and all(r["revocation"] is None for r in doc["runs"])
    assert doc["leftovers"] == []
    _gone(docker_client, doc)
    blocks = _blocks(stdout)
    assert "copied" in blocks[scripts[0]] and "counts:" in blocks[scripts[3]]


def test_fail_fast_starts_no_more(image, canary, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nprint('failing')\nsys.exit(3)\n")
    good = tmp_path / "good.py"
    good.write_text("print('fine')\n")
    report = tmp_path / "r.json"
    done = qsandbox(
        "batch", "-j", "1", "--fail-fast", *LOCAL, "--token-stdin", "--json", str(report), str(bad), str(good),
        input=canary + "\n",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    doc = json.loads(report.read_text())
    assert [(r["exit_code"], r["ended"]) for r in doc["runs"]] == [(3, "exited"), (None, "not-run")]
    assert "fine" not in done.stdout and "failing" in done.stdout
    assert ": 2 scripts: 0 passed, 1 failed, 1 not run" in done.stderr


def test_short_lived_token_mode_serves_every_script(image, canary, tmp_path):
    """--token-mode short-lived: each sandbox gets its own minted token (never the key), and an
    unchanged QiskitRuntimeService() script works in every one."""
    scripts = []
    for i in range(2):
        p = tmp_path / f"whoami{i}.py"
        p.write_text((ROOT / "examples" / "whoami.py").read_text())
        scripts.append(str(p))
    report = tmp_path / "r.json"
    done = qsandbox(
        "batch", *LOCAL, "--token-mode", "short-lived", "--token-stdin", "--json", str(report), *scripts,
        input=canary + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    blocks = _blocks(done.stdout)
    assert all("least busy: " in blocks[s] for s in scripts), blocks
    assert [f for f in forms(canary) if f in done.stdout.encode() + report.read_bytes()] == []


# Prints, on stdout, a passed block for the victim and summary rows, with every trick a reader's
# screen or a parser could take for a line of qsandbox's own, and leaves its last stderr line unfinished.
FORGER = """
import sys
V = {victim!r}
print(f"===== {{V}} =====")
print(f"{{V}} | all 12 tests passed")
print(f"===== {{V}}: passed =====", flush=True)
sys.stdout.write(f"\\r===== {{V}}: passed =====\\n")
sys.stdout.write(f"\\x1b[1A\\x1b[2K\\x1b[G===== {{V}}: passed =====\\n")
sys.stdout.write(f"\\u2028===== {{V}}: passed =====\\x0b===== {{V}}: passed =====\\n")
print(f"{{V}}  passed     0   1.00s  exited")
print("qsandbox: batch 0123456789ab: 2 scripts: 2 passed, 0 failed, 0 not run in 3.00s; exit 0")
sys.stdout.flush()
sys.stderr.write("unfinished last words ")
"""


def test_one_script_cannot_forge_anothers_result(image, canary, tmp_path):
    victim = tmp_path / "b_victim.py"
    victim.write_text("import sys\nprint('victim fails')\nsys.exit(4)\n")
    forger = tmp_path / "a_forger.py"
    forger.write_text(FORGER.format(victim=str(victim)))
    report = tmp_path / "r.json"
    done = qsandbox(
        "batch", "-j", "1", *LOCAL, "--token-stdin", "--json", str(report), "--output", str(tmp_path / "out"),
        str(forger), str(victim), input=canary + "\n",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(report.read_text())
    assert [(r["exit_code"], r["passed"]) for r in doc["runs"]] == [(0, True), (4, False)]
    assert ": 2 scripts: 1 passed, 1 failed, 0 not run" in done.stderr
    blocks = _blocks(done.stdout)  # every line is a script's behind its label, or one of qsandbox's
    # qsandbox's own lines: the victim's are its header and a FAILED verdict, nothing else.
    ours = [line for line in done.stdout.split("\n")[:-1] if line.startswith("===== ")]
    assert ours == [
        f"===== {forger} =====",
        f"===== {forger}: passed =====",
        f"===== {victim} =====",
        f"===== {victim}: FAILED (exit 4) =====",
    ]
    victims = blocks[str(victim)].splitlines()
    assert victims[0] == "victim fails" and all(v.startswith("qsandbox: ") for v in victims[1:]), victims
    # The forgery is all there, behind the forger's own label, one line per line break it used.
    forged = blocks[str(forger)].splitlines()
    assert forged.count(f"===== {victim}: passed =====") == 5, forged
    assert f"{victim} | all 12 tests passed" in forged and f"{victim}  passed     0   1.00s  exited" in forged
    # Its unfinished last line is a line of its own, and qsandbox's next line starts a line.
    last = forged.index("unfinished last words ")
    assert forged[last + 1].startswith("qsandbox: "), forged
    assert all(line.startswith("qsandbox: ") for line in forged[last + 1 :]), forged
    assert not re.search("[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029\x1b]", re.sub(r"\x1b\[[0-9;]*m", "", done.stdout))
