"""`qsandbox lab`: JupyterLab in the sandbox, a real browser on the host through the launcher.

A real browser, not a mock: headless Chromium from the OS packages (Debian's `chromium` and
`chromium-driver`), driven by Selenium, opens the URL the launcher prints, makes a notebook, runs a
Bell pair on `--platform local`, reads the counts from the page, saves, and shuts the lab down from
its File menu; the notebook is back in DIR with its output, the key masked. The rest talks HTTP to
the launcher's port as any client (or another user of the machine) could, and drives the stream
itself where only a hostile peer would.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import qsandbox

from qsandbox.common.paths import LAB_TARGET
from qsandbox.launcher.checks import labclient
from qsandbox.launcher.core.credentials import KeySource
from qsandbox.launcher.engine import sandbox

URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]+)")
LAB_START = 420.0  # the first lab of a session builds JupyterLab's derived image (about a minute here)
OTHER_USER = "qsandbox-lab-other"

BELL = (
    "from qiskit import QuantumCircuit; from qiskit.transpiler import generate_preset_pass_manager; "
    "from qiskit_ibm_runtime import QiskitRuntimeService; from qiskit_ibm_runtime.executor_sampler import Sampler; "
    "backend = QiskitRuntimeService().least_busy(operational=True, simulator=False); "
    "qc = QuantumCircuit(2); qc.h(0); qc.cx(0, 1); qc.measure_all(); "
    "isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc); "
    "counts = Sampler(mode=backend).run([isa], shots=1000).result()[0].data.meas.get_counts(); "
    "print('counts:', dict(sorted(counts.items())))"
)
SHOW_KEY = "import os; print('key:', open(os.environ['QISKIT_IBM_TOKEN_FILE']).read().strip())"


class Lab:
    """A `qsandbox lab` launcher a test started: its stderr collected as it comes, its URL."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def url(self, timeout: float = LAB_START) -> tuple[str, str, str]:
        """(the printed URL, its base http://127.0.0.1:PORT, the token)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = URL.search(self.stderr)
            if m:
                return m.group(), f"http://127.0.0.1:{m.group(1)}", m.group(2)
            assert self.proc.poll() is None, f"the lab ended before its URL: {self.stderr[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"no URL within {timeout} s: {self.stderr[-3000:]}")

    def wait(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code


def start_lab(popen, directory: Path, key: str, *options: str) -> Lab:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    argv = [sys.executable, "-m", "qsandbox", "lab", "--platform", "local", "--no-browser", "--token-stdin"]
    proc = popen(
        [*argv, *options, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    proc.stdin.write(key + "\n")
    proc.stdin.close()
    proc.stdin = None  # end() must not flush it again
    return Lab(proc)


def http(url: str, token: str | None = None, method: str = "GET", body: object = None) -> tuple[int, str, str]:
    """(status, Location, body) of one request, redirects not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http://127.0.0.1 only
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=60) as r:
            return r.status, r.headers.get("Location", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location", ""), e.read().decode(errors="replace")


def ready(lab: Lab) -> tuple[str, str]:
    """The lab answers (its first connection waits, in the sandbox, for JupyterLab to listen):
    (base, token)."""
    _, base, token = lab.url()
    try:
        status, _, body = http(f"{base}/api/status", token)
    except OSError as e:
        raise AssertionError(f"the lab's first request failed ({e!r}); the lab says:\n{lab.stderr[-4000:]}") from None
    assert status == 200, body
    return base, token


def lab_containers(client) -> list[str]:
    """Running sandboxes of a lab: their command runs JupyterLab's module."""
    listed = client.api.containers(filters={"label": sandbox.LABEL})
    return [c["Id"] for c in listed if "qsandbox.inside.jupyter" in (c.get("Command") or "")]


# -- the real browser -----------------------------------------------------------------------------


@pytest.fixture
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):
            raise AssertionError("CI installs chromium and chromium-driver (.ci/run): they are missing")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(a)
    d = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield d
    finally:
        d.quit()


def _run_cell(d, editor, code: str, shown: str, timeout: float = 240) -> str:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    editor.click()
    editor.send_keys(code)
    editor.send_keys(Keys.SHIFT, Keys.ENTER)
    panel = (By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
    try:
        WebDriverWait(d, timeout).until(lambda d: any(shown in e.text for e in d.find_elements(*panel)))
    except TimeoutException:
        page = d.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden)").text
        raise AssertionError(f"{shown!r} not on the page within {timeout} s; the notebook shows:\n{page}") from None
    return next(e.text for e in d.find_elements(*panel) if shown in e.text)


def test_a_real_browser_runs_a_bell_pair_and_the_notebook_comes_back_masked(
    image, canary, tmp_path, popen, browser, docker_client
):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine\n")
    lab = start_lab(popen, work, canary)
    url, base, token = lab.url()
    d, wait = browser, WebDriverWait(browser, 180)

    d.get(url)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, '.jp-LauncherCard[data-category="Notebook"]'))).click()
    cell = (By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content")
    editor = wait.until(ec.element_to_be_clickable(cell))
    try:  # the kernel started (the status bar says so), before a cell is run
        wait.until(lambda d: "| Idle" in d.find_element(By.ID, "jp-main-statusbar").text)
    except TimeoutException:
        raise AssertionError(f"the kernel never became idle; the lab says:\n{lab.stderr[-4000:]}") from None
    counts_text = _run_cell(d, editor, BELL, "counts: {")
    counts = json.loads(counts_text.split("counts:", 1)[1].strip().replace("'", '"'))
    assert counts.get("00", 0) + counts.get("11", 0) > 800, counts  # the Bell pair, read from the page
    shot = os.environ.get("QSANDBOX_LAB_SCREENSHOT")  # docs/images/lab-bell.png is made this way
    d.save_screenshot(shot or str(tmp_path / "lab.png"))
    # The key is the kernel's to read (the user's own screen shows it); what comes back masks it.
    editor = d.find_elements(*cell)[-1]
    assert _run_cell(d, editor, SHOW_KEY, "key: ") == f"key: {canary}"
    # Saved: the first save of an untitled notebook asks for its name.
    editor.send_keys(Keys.CONTROL, "s")
    name = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".jp-Dialog input")))
    name.send_keys(Keys.CONTROL, "a")
    name.send_keys("bell.ipynb")
    d.find_element(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept").click()
    end = time.monotonic() + 60
    while "key: " not in http(f"{base}/api/contents/bell.ipynb", token)[2] and time.monotonic() < end:
        time.sleep(0.5)
    WebDriverWait(d, 30).until_not(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Dialog"))

    # File > Shut Down, and the dialog's confirmation: the lab ends from its own menu.
    menus = d.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
    next(m for m in menus if m.text.strip() == "File").click()
    wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, 'li.lm-Menu-item[data-command="filemenu:shutdown"]'))
    ).click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept"))).click()
    assert lab.wait(120) == 0, lab.stderr[-3000:]

    back = json.loads((work / "bell.ipynb").read_text())
    text = json.dumps(back)
    assert "counts: {'00': " in text and "key: ***" in text
    assert canary not in text and token not in text
    assert (work / "notes.txt").read_text() == "mine\n"
    assert f"back in {work}: bell.ipynb" in lab.stderr
    assert canary not in lab.stderr and token not in lab.stderr.replace(url, "")  # the URL line only
    assert "container and secret destroyed (engine confirms)" in lab.stderr.strip().splitlines()[-1]
    assert lab_containers(docker_client) == []


# -- the door: the token, other users, the launcher's death -----------------------------------------


@pytest.mark.changes_machine(f"creates the OS user {OTHER_USER} (useradd) and runs a request as that user")
def test_nothing_is_served_without_the_token_to_anyone_and_the_token_is_in_no_process(image, canary, tmp_path, popen):
    if os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("needs root (useradd, runuser)")
    try:
        pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", OTHER_USER], check=True)
    work = tmp_path / "work"
    work.mkdir()
    lab = start_lab(popen, work, canary)
    base, token = ready(lab)
    # The positive control: with the token, the contents answer.
    assert http(f"{base}/api/contents", token)[0] == 200
    # Without it: the page sends to the login form, the API refuses, a wrong token too.
    status, location, _ = http(f"{base}/lab")
    assert status == 302 and location.startswith("/login"), (status, location)
    assert http(f"{base}/api/contents")[0] == 403
    assert http(f"{base}/api/contents", "0" * len(token))[0] == 403
    assert http(f"{base}/api/contents?token={'0' * len(token)}")[0] == 403
    # Another user of this machine reaches the port (300 connections are made), and the launcher
    # closes each at once: no request of theirs is answered, and holding connections takes none of
    # the stream's channels, so the user's own requests are still answered meanwhile. The token is
    # in no process's arguments, nor in the launcher's environment.
    probe = (
        "import os, select, socket, sys, time, urllib.request, urllib.error\n"
        "host, port = sys.argv[1].rsplit('/', 1)[1].split(':')\n"
        "held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(300)]\n"
        "time.sleep(2)\n"
        "closed = [s for s in select.select(held, [], [], 0)[0] if s.recv(1) == b'']\n"
        "print('connected', len(held), 'closed by the launcher', len(closed))\n"
        "try: urllib.request.urlopen(sys.argv[1] + '/api/contents', timeout=30); print('status 200')\n"
        "except urllib.error.HTTPError as e: print('status', e.code)\n"
        "except OSError as e: print('no answer')\n"
        "print('holding', flush=True)\n"
        "token, control = sys.stdin.read().split()  # not arguments: this very search would find them\n"
        "found, controls = [], []\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try: argv = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
        "    except OSError: continue\n"
        "    found += [pid] if token.encode() in argv else []\n"
        "    controls += [pid] if control.encode() in argv else []\n"
        "print('token in argv of', found, 'control found:', len(controls) == 1)\n"
        "try: open(f'/proc/{sys.argv[2]}/environ', 'rb').read(); print('launcher environ readable')\n"
        "except OSError as e: print('launcher environ:', e.strerror)\n"
    )
    control = secrets.token_hex(16)  # in one process's arguments: the search finds what is there
    popen([sys.executable, "-c", "import time; time.sleep(120)", control])
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    assert python, "no system python3 to run as the other user"
    other = subprocess.Popen(
        ["runuser", "-u", OTHER_USER, "--", python, "-c", probe, base, str(lab.proc.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/tmp",
    )
    said = [other.stdout.readline().strip() for _ in range(3)]
    assert said == ["connected 300 closed by the launcher 300", "no answer", "holding"], said
    assert http(f"{base}/api/contents", token)[0] == 200  # ours, while theirs are held
    out, err = other.communicate(f"{token} {control}", timeout=60)
    assert out.splitlines() == [
        "token in argv of [] control found: True",
        "launcher environ: Permission denied",
    ], err
    assert f"refused a connection to the lab from uid {pwd.getpwnam(OTHER_USER).pw_uid}" in lab.stderr
    assert token.encode() not in Path(f"/proc/{lab.proc.pid}/environ").read_bytes()
    lab.proc.send_signal(signal.SIGINT)
    assert lab.wait(120) == 130, lab.stderr[-3000:]


def test_a_sigkilled_launcher_leaves_nothing(image, canary, tmp_path, popen, docker_client, leak_search):
    work = tmp_path / "work"
    work.mkdir()
    lab = start_lab(popen, work, canary)
    base, _ = ready(lab)
    running = lab_containers(docker_client)
    assert running, "the control: the lab's sandbox runs before the launcher dies"
    run_ids = [docker_client.api.inspect_container(c)["Config"]["Labels"][sandbox.LABEL] for c in running]
    lab.proc.kill()
    lab.wait(30)
    killed = time.monotonic()
    while any(sandbox.leftovers(docker_client, r) for r in run_ids) and time.monotonic() - killed < 120:
        time.sleep(0.2)
    left = [n for r in run_ids for n in sandbox.leftovers(docker_client, r)]
    # A killed launcher cannot remove the emulator's network (--platform local); nothing else remains.
    assert [n for n in left if not n.startswith("network ")] == [], left
    for n in left:
        docker_client.api.remove_network(n.removeprefix("network "))
    with contextlib.suppress(OSError):
        socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=2).close()
        raise AssertionError("the launcher's port still answers after SIGKILL")
    assert leak_search.all_hits() == []


# -- the work back --------------------------------------------------------------------------------


def _put(base: str, token: str, name: str, content: str) -> None:
    status, _, body = http(
        f"{base}/api/contents/{name}", token, "PUT", {"type": "file", "format": "text", "content": content}
    )
    assert status in (200, 201), body


def test_work_comes_back_without_overwriting_what_changed_here_and_credential_stores_stay_out(
    image, canary, tmp_path, popen
):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "kept.py").write_text("print('host')\n")
    (work / "edited.py").write_text("print('before')\n")
    (work / "sub" / "old.txt").write_text("old\n")
    (work / ".env").write_text("SECRET=1\n")
    lab = start_lab(popen, work, canary)
    base, token = ready(lab)
    names = {c["name"] for c in json.loads(http(f"{base}/api/contents", token)[2])["content"]}
    assert ".env" not in names and {"kept.py", "edited.py", "sub"} <= names
    assert "not sent into the sandbox: .env" in lab.stderr
    _put(base, token, "kept.py", "print('sandbox')\n")
    _put(base, token, "edited.py", "print('after')\n")
    _put(base, token, "sub/new.txt", f"the key is {canary}\n")
    (work / "kept.py").write_text("print('host, changed meanwhile')\n")
    assert http(f"{base}/api/shutdown", token, "POST")[0] == 200
    assert lab.wait(120) == 0, lab.stderr[-3000:]
    assert (work / "edited.py").read_text() == "print('after')\n"
    assert (work / "sub" / "new.txt").read_text() == "the key is ***\n"
    assert (work / "kept.py").read_text() == "print('host, changed meanwhile')\n"
    assert (work / "kept.sandbox.py").read_text() == "print('sandbox')\n"
    assert "kept.py changed here while the lab ran: the sandbox's version is kept.sandbox.py" in lab.stderr
    assert not list(work.rglob(".ipynb_checkpoints"))


def test_output_variant_leaves_the_directory_untouched(image, canary, tmp_path, popen):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "a.txt").write_text("a\n")
    before = {p: p.read_bytes() for p in work.rglob("*")}
    lab = start_lab(popen, work, canary, "--output", str(out))
    base, token = ready(lab)
    _put(base, token, "a.txt", "changed\n")
    _put(base, token, "b.txt", "new\n")
    assert http(f"{base}/api/shutdown", token, "POST")[0] == 200
    assert lab.wait(120) == 0, lab.stderr[-3000:]
    assert {p: p.read_bytes() for p in work.rglob("*")} == before
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    assert (out / "a.txt").read_text() == "changed\n"


# -- the inbound direction, as a hostile peer would use it ----------------------------------------


def test_launcher_opened_channels_reach_the_labs_port_and_nothing_else(image, canary, tmp_path):
    """Channels the launcher opens (even ids) to every other target the sandbox has are refused by
    the entry point; the lab's own target, the positive control, is accepted."""
    from qsandbox.launcher.cli import options
    from qsandbox.launcher.run import lab as lab_mod
    from qsandbox.launcher.run.run import Run

    others = [
        b"127.0.0.1:3128",  # the egress relay's proxy
        b"127.0.0.1:8765",  # short-lived mode's token server
        b"127.0.0.1:22",
        b"localhost:8888",
        b"0.0.0.0:8888",
        b"[::1]:8888",
        b"127.0.0.2:8888",
        b"127.0.0.1:8888/",
        b"quantum.cloud.ibm.com:443",
    ]
    answers: dict[bytes, str | None] = {}

    class Probe(lab_mod.LabPlan):
        def serve(self, channels, local, say):
            super().serve(channels, local, say)
            threading.Thread(target=self.probe, args=(channels,), daemon=True).start()

        def probe(self, channels):
            for target in [LAB_TARGET.encode(), *others]:
                ours, theirs = socket.socketpair()
                ch = channels.open(ours, target)
                assert ch is not None
                answers[target] = ch.refusal if ch.opened.wait(150) else "no answer"
                ch.abort() if ch.refusal is None else ours.close()
                theirs.close()
            base, token = f"http://127.0.0.1:{self.listener.port}", self.token
            http(f"{base}/api/shutdown", token, "POST")

    work = tmp_path / "work"
    work.mkdir()
    o = _lab_options()
    settings = options.lab_settings_for(work, o, None)
    err = io.BytesIO()
    plan = Probe(work, open_browser=False)
    source = KeySource(stdin=False, file=None, env=None, command=f"printf {canary}")
    result = Run(settings, source, out=io.BytesIO(), err=err, prompt=None, lab=plan).execute()
    assert result.exit_code == 0, err.getvalue().decode()[-3000:]
    assert answers.pop(LAB_TARGET.encode()) is None  # accepted: JupyterLab's port
    assert answers == {t: f"refused: only the lab ({LAB_TARGET}) is reachable from outside" for t in others}


def _lab_options() -> dict[str, object]:
    """The shared options as click gives them to `qsandbox lab --platform local`."""
    from click.testing import CliRunner

    from qsandbox.launcher.cli import commands as cli

    seen: dict[str, object] = {}

    def capture(directory, output, no_browser, **o):
        seen.update(o)

    command = cli.lab
    callback, command.callback = command.callback, capture
    try:
        result = CliRunner().invoke(cli.main, ["lab", "--platform", "local", "--no-browser", "."])
    finally:
        command.callback = callback
    assert result.exit_code == 0, result.output
    return seen


def test_a_run_that_is_not_a_lab_refuses_every_launcher_opened_channel(image, canary, tmp_path):
    """The door exists only in a lab: a script's sandbox answers every OPEN of the launcher's with a
    refusal, its own relay port included (a script listening on the lab's port changes nothing)."""
    from qsandbox.launcher.cli import options
    from qsandbox.launcher.run import lab as lab_mod
    from qsandbox.launcher.run.run import Run

    script = tmp_path / "listen.py"
    script.write_text(
        "import socket, time\ns = socket.socket(); s.bind(('127.0.0.1', 8888)); s.listen()\n"
        "print('listening', flush=True)\ntime.sleep(20)\n"
    )
    answers: dict[bytes, str | None] = {}

    class NotALab(lab_mod.LabPlan):
        def collect(self, settings):
            from qsandbox.launcher.run import transfer

            return transfer.collect(settings.script, workdir=None, includes=(), limit=settings.input_limit)

        def serve(self, channels, local, say):
            threading.Thread(target=self.probe, args=(channels,), daemon=True).start()

        def probe(self, channels):
            time.sleep(3)
            for target in (LAB_TARGET.encode(), b"127.0.0.1:3128"):
                ours, theirs = socket.socketpair()
                ch = channels.open(ours, target)
                answers[target] = ch.refusal if ch.opened.wait(60) else "no answer"
                ours.close()
                theirs.close()

    o = _lab_options()
    settings = options.settings_for(script, {**o, "requirements": None})
    plan = NotALab(tmp_path, open_browser=False)
    plan.token = None  # type: ignore[assignment]  # no lab token in the start message: not a lab
    result = Run(
        settings,
        KeySource(stdin=False, file=None, env=None, command=f"printf {canary}"),
        out=io.BytesIO(),
        err=io.BytesIO(),
        prompt=None,
        lab=plan,
    ).execute()
    assert result.exit_code == 0
    assert answers == {LAB_TARGET.encode(): "nothing listens here", b"127.0.0.1:3128": "nothing listens here"}


def test_audit_of_a_lab_session_finds_nothing(image):
    """`qsandbox audit --path lab`: the kernel (driven over its WebSocket, as a browser does) reads
    the key and writes it into /work; the live sandbox, the launcher, the engine and the host are
    searched, and what came back into DIR holds the key masked."""
    done = qsandbox("audit", "--path", "lab", timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exit path lab: launcher exit 0, 0 hit(s)" in done.stdout
    assert "NOT SEARCHED" not in done.stdout and "NOT TAKEN" not in done.stdout
    assert "0 hit(s) in the live sandbox (inspect, top, diff): 1 searched" in done.stdout
    assert "0 hit(s) in the launcher's argv and environment (/proc): 2 searched" in done.stdout
    assert done.stderr.strip().endswith("qsandbox: audit found 0 hit(s)")


HOSTILE_CELL = r"""
import os, socket, stat
def attempt(what, call):
    try:
        call()
        print(what + ": done")
    except OSError as e:
        print(what + ": " + (e.strerror or type(e).__name__))
def connect(address):
    return lambda: socket.create_connection(address, timeout=3).close()
port = PORT
attempt("connect the launcher's port on the sandbox's loopback", connect(("127.0.0.1", port)))
routes = open("/proc/net/route").read().split("\n")[1:]
gateways = [r.split()[2] for r in routes if r.split() and r.split()[2] != "00000000"]
host = socket.inet_ntoa(bytes.fromhex(gateways[0])[::-1]) if gateways else "172.17.0.1"
attempt("connect the launcher's port on the engine's host", connect((host, port)))
frame = b"\x01\x00\x00\x00\x12\x00\x00\x00\x0c127.0.0.1:22"  # an OPEN, as only the entry point may send
attempt("write a frame into the entry point's stream", lambda: open("/proc/1/fd/1", "wb").write(frame))
os.symlink("/etc/passwd", "/work/link-out")
os.mkfifo("/work/a-fifo")
open("/work/run.sh", "w").write("#!/bin/sh\necho pwned\n"); os.chmod("/work/run.sh", 0o4755)
open("/work/.bashrc", "w").write("echo pwned\n")
os.makedirs("/work/sub/.git/hooks"); open("/work/sub/.git/hooks/post-checkout", "w").write("echo pwned\n")
open("/work/\x1b]0;pwned\x07title.txt", "w").write("x\n")
open("/work/key.txt", "w").write(open(os.environ["QISKIT_IBM_TOKEN_FILE"]).read())
print("planted")
"""


def test_a_hostile_kernel_reaches_nothing_outside_and_what_it_plants_lands_harmless(image, canary, tmp_path, popen):
    """A cell is code the user did not read: from the kernel it tries the launcher's port (on the
    sandbox's loopback and on the engine's host), the entry point's stream, and plants links, FIFOs,
    a setuid script, a top-level dotfile, repository hooks and a name with a terminal escape in
    /work. The lab reaches nothing; what comes back lands as plain, inert files, the key masked."""

    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine\n")
    lab = start_lab(popen, work, canary)
    base, token = ready(lab)
    url = f"{base}/lab?token={token}"
    said = labclient.execute(url, HOSTILE_CELL.replace("PORT", base.rsplit(":", 1)[1]))
    assert said.splitlines() == [
        "connect the launcher's port on the sandbox's loopback: Connection refused",
        *[line for line in said.splitlines() if line.startswith("connect the launcher's port on the engine's host: ")],
        "write a frame into the entry point's stream: Permission denied",
        "planted",
    ], said
    assert "on the engine's host: done" not in said
    assert http(f"{base}/api/shutdown", token, "POST")[0] == 200
    assert lab.wait(120) == 0, lab.stderr[-3000:]
    landed = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    assert landed == ["keep.txt", "key.txt", "run.sh"], landed
    assert (work / "key.txt").read_text().strip() == "***"
    assert stat.S_IMODE((work / "run.sh").stat().st_mode) == 0o644  # no exec, no setuid bit back
    assert "\x1b" not in lab.stderr and "\\x1b]0;pwned" in lab.stderr  # named, escaped
    assert "refused from the lab's /work: .bashrc" in lab.stderr
    assert "refused from the lab's /work: sub/.git/hooks/post-checkout" in lab.stderr
    assert (work / "keep.txt").read_text() == "mine\n"


def test_timeout_ends_the_lab_and_the_work_still_comes_back(image, canary, tmp_path, popen):
    work = tmp_path / "work"
    work.mkdir()
    lab = start_lab(popen, work, canary, "--timeout", "40")
    base, token = ready(lab)
    _put(base, token, "saved.txt", "saved before the time was up\n")
    assert lab.wait(180) == 124, lab.stderr[-3000:]
    assert (work / "saved.txt").read_text() == "saved before the time was up\n"
    assert "(timeout)" in lab.stderr.strip().splitlines()[-1]
    # JupyterLab's image is derived on first use, not the base image, and listed with the others.
    listed = qsandbox("images").stdout
    assert any(line.split()[-1] == "jupyterlab==4.6.6" and " derived " in line for line in listed.splitlines()), listed


RELAY_CELL = r"""
import socket
for target in ("127.0.0.1:PORT", "localhost:PORT", "[::1]:PORT", "localhost:443", "127.0.0.1:443"):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=30)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    print(target, s.recv(200).split(b"\r\n", 1)[0].decode())
    s.close()
"""


def test_a_kernel_cannot_make_the_launcher_connect_back_to_the_lab_or_the_host(image, canary, tmp_path, popen):
    """On --platform ibm the sandbox's one way out is the relay: asked for the launcher's own port
    (or anything else on the host's loopback), it refuses before connecting, and says so."""

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    proc = popen(
        [sys.executable, "-m", "qsandbox", "lab", "--no-browser", "--token-stdin", str(work)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    proc.stdin.write(canary + "\n")
    proc.stdin.close()
    proc.stdin = None
    lab = Lab(proc)
    base, token = ready(lab)
    port = base.rsplit(":", 1)[1]
    said = labclient.execute(f"{base}/lab?token={token}", RELAY_CELL.replace("PORT", port))
    assert said.splitlines() == [
        f"{t} HTTP/1.1 403 Forbidden"
        for t in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost:443", "127.0.0.1:443")
    ], said
    assert http(f"{base}/api/shutdown", token, "POST")[0] == 200
    assert lab.wait(120) == 0, lab.stderr[-3000:]
    closing = lab.stderr.strip().splitlines()[-1]
    assert "egress refused: " in closing, closing
    for target in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert target in closing.split("egress refused: ", 1)[1], closing


def test_requests_from_the_moment_the_url_is_printed_are_all_answered(image, canary, tmp_path, popen):
    """The URL is printed before JupyterLab listens: a browser's first requests wait in the sandbox
    and are answered, none reset (jupyter_server's port probe listens and closes a socket first)."""
    from concurrent.futures import ThreadPoolExecutor

    work = tmp_path / "work"
    work.mkdir()
    lab = start_lab(popen, work, canary)
    _, base, token = lab.url()

    def status(i: int) -> object:
        time.sleep(i * 0.25)  # over JupyterLab's start, from the URL on
        try:
            return http(f"{base}/api/status", token)[0]
        except OSError as e:
            return repr(e)

    with ThreadPoolExecutor(24) as pool:
        assert list(pool.map(status, range(24))) == [200] * 24
    assert http(f"{base}/api/shutdown", token, "POST")[0] == 200
    assert lab.wait(120) == 0, lab.stderr[-3000:]


def test_the_example_notebook_the_readme_opens_in_a_lab_runs(image, tmp_path):
    """examples/bell.ipynb, which the README's `qsandbox lab --platform local examples/` opens, runs
    as it is (here headless, with the same kernel and account)."""
    from helpers import ROOT

    out = tmp_path / "out"
    done = qsandbox("run", "--platform", "local", "--output", str(out), str(ROOT / "examples" / "bell.ipynb"))
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.split("counts:", 1)[1].strip().splitlines()[0].replace("'", '"'))
    assert counts.get("00", 0) + counts.get("11", 0) > 800, counts
