"""`qsandbox lab` without an engine: the start message's token, the entry point's door, the work
merged back into DIR, and how the browser is opened (tests/docker/test_lab.py has the real thing)."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import threading
from contextlib import ExitStack

import pytest

from qsandbox.common import handoff, mux
from qsandbox.common.paths import LAB_PORT, LAB_TARGET
from qsandbox.common.redact import Redactor
from qsandbox.inside import lab as inside_lab
from qsandbox.launcher.run import lab


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_lab_token_travels_in_the_start_message_only_and_is_never_printed():
    start = handoff.Start(token="k" * 40, channel="ibm_quantum_platform", instance=None, lab_token="t" * 48)
    assert handoff.decode(handoff.encode_start(start)) == start
    assert "t" * 48 not in repr(start) and "lab_token=<hidden>" in repr(start)
    plain = handoff.Start(token="k" * 40, channel="ibm_quantum_platform", instance=None)
    assert b"lab_token" not in handoff.encode_start(plain)
    assert handoff.decode(handoff.encode_start(plain)).lab_token is None
    # A non-string is no token: the run is no lab.
    assert handoff.decode(b'{"type":"start","token":"k","lab_token":5}').lab_token is None


class _Channels:
    """What the door calls on the entry point's Channels."""

    def __init__(self) -> None:
        self.refused: dict[int, str] = {}
        self.accepted_peers: list[tuple[str, int]] = []
        self.done = threading.Event()

    def refuse(self, ident: int, reason: str) -> None:
        self.refused[ident] = reason
        self.done.set()

    def accepted(self, ident: int, sock: socket.socket):
        self.accepted_peers.append(sock.getpeername())
        self.done.set()
        return None  # as if the launcher cancelled meanwhile: the door closes the socket


@pytest.mark.parametrize(
    "target",
    [b"127.0.0.1:3128", b"127.0.0.1:8765", b"localhost:8888", b"127.0.0.1:8888 ", b"quantum.cloud.ibm.com:443", b""],
)
def test_the_door_refuses_every_target_but_the_labs_at_once(target):
    channels = _Channels()
    inside_lab.Door(channels, threading.Event()).on_open(16, target)  # type: ignore[arg-type]
    assert channels.refused == {16: f"refused: only the lab ({LAB_TARGET}) is reachable from outside"}


def test_the_door_waits_for_jupyterlab_to_serve_before_it_connects(tmp_path, monkeypatch):
    """jupyter_server binds, listens on and closes a probe socket before its real one: a connection
    made then is reset unanswered. The door connects only once the server's info file is there."""
    monkeypatch.setattr(inside_lab, "RUNTIME", str(tmp_path))
    monkeypatch.setattr(inside_lab, "READY_WAIT", 1.0)
    try:
        server = socket.create_server(("127.0.0.1", LAB_PORT))  # listening, but not yet serving
    except OSError:
        pytest.skip(f"127.0.0.1:{LAB_PORT} is taken on this machine")
    with server:
        server.settimeout(0.1)
        channels = _Channels()
        inside_lab.Door(channels, threading.Event()).on_open(16, LAB_TARGET.encode())  # type: ignore[arg-type]
        assert channels.done.wait(10)
        assert channels.refused == {16: "the lab is not listening"}
        with pytest.raises(TimeoutError):
            server.accept()  # never connected


def test_the_door_connects_the_labs_target_to_its_port_only(tmp_path, monkeypatch):
    monkeypatch.setattr(inside_lab, "RUNTIME", str(tmp_path))
    (tmp_path / "jpserver-7.json").write_text("{}")
    try:
        server = socket.create_server(("127.0.0.1", LAB_PORT))
    except OSError:
        pytest.skip(f"127.0.0.1:{LAB_PORT} is taken on this machine")
    with server:
        channels = _Channels()
        inside_lab.Door(channels, threading.Event()).on_open(16, LAB_TARGET.encode())  # type: ignore[arg-type]
        conn, _ = server.accept()
        assert channels.done.wait(10)
        assert channels.refused == {} and channels.accepted_peers == [("127.0.0.1", LAB_PORT)]
        conn.close()


def test_changed_files_are_staged_masked_and_jupyters_own_files_are_not(tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "output"
    work.mkdir()
    out.mkdir()
    (work / "same.txt").write_text("same\n")
    (work / "edited.txt").write_text("before\n")
    manifest = inside_lab.Manifest(str(work))
    (work / "edited.txt").write_text("after KEYKEYKEYKEYKEY\n")
    (work / "sub").mkdir()
    (work / "sub" / "new.ipynb").write_text(
        '{"cells": [{"cell_type": "code", "source": "", "outputs": [{"output_type": "stream", "name": "stdout", '
        '"text": ["KEYKEYKE", "YKEYKEY\\n"]}]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    )
    (work / ".ipynb_checkpoints").mkdir()
    (work / ".ipynb_checkpoints" / "x.ipynb").write_text("{}")
    os.symlink("/etc/passwd", work / "link")
    (out / "stale").write_text("left by a kernel")
    monkeypatch.setattr(inside_lab, "OUTPUT_DIR", out)
    count = inside_lab.stage_changes(manifest, Redactor(["KEYKEYKEYKEYKEY"]), lambda _: None)
    assert count == 2
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["edited.txt", "sub/new.ipynb"]
    assert (out / "edited.txt").read_text() == "after ***\n"
    assert "KEY" not in (out / "sub" / "new.ipynb").read_text()  # split across a multiline field too


def test_merge_writes_what_is_as_sent_and_puts_the_sandboxs_beside_what_changed_here(tmp_path):
    staging, work = tmp_path / "staging", tmp_path / "work"
    (staging / "sub").mkdir(parents=True)
    (work / "sub").mkdir(parents=True)
    sent = {"a.py": digest(b"a0"), "b.py": digest(b"b0"), "gone.py": digest(b"g0")}
    (work / "a.py").write_bytes(b"a0")  # as sent: overwritten
    (work / "b.py").write_bytes(b"b1")  # changed here meanwhile: kept
    (work / "b.sandbox.py").write_bytes(b"someone's")  # the first name beside it is taken
    (work / "c.py").write_bytes(b"c-host")  # never sent, made on both sides: kept
    for name, data in {"a.py": b"a2", "b.py": b"b2", "c.py": b"c2", "gone.py": b"g2", "sub/new.txt": b"n"}.items():
        (staging / name).write_bytes(data)
    merged = lab.merge(staging, work, sent)
    assert sorted(merged.written) == ["a.py", "gone.py", "sub/new.txt"]
    assert sorted(merged.beside) == [("b.py", "b.sandbox-2.py"), ("c.py", "c.sandbox.py")]
    assert (work / "a.py").read_bytes() == b"a2" and (work / "gone.py").read_bytes() == b"g2"
    assert (work / "b.py").read_bytes() == b"b1" and (work / "b.sandbox-2.py").read_bytes() == b"b2"
    assert (work / "b.sandbox.py").read_bytes() == b"someone's"
    assert (work / "c.py").read_bytes() == b"c-host" and (work / "c.sandbox.py").read_bytes() == b"c2"
    assert not [p for p in work.iterdir() if ".qsandbox-" in p.name]  # no temporary file left


def test_merge_follows_no_link_in_the_directory(tmp_path):
    staging, work, elsewhere = tmp_path / "staging", tmp_path / "work", tmp_path / "elsewhere"
    (staging / "linked").mkdir(parents=True)
    work.mkdir()
    elsewhere.mkdir()
    (elsewhere / "target.txt").write_bytes(b"theirs")
    os.symlink(elsewhere, work / "linked")  # a directory link swapped in while the lab ran
    os.symlink(elsewhere / "target.txt", work / "file.txt")
    (staging / "linked" / "x.txt").write_bytes(b"x")
    (staging / "file.txt").write_bytes(b"sandbox")
    merged = lab.merge(staging, work, {"file.txt": digest(b"theirs")})
    assert [name for name in merged.failed if name.startswith("linked/x.txt")]
    assert merged.beside == [("file.txt", "file.sandbox.txt")]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["target.txt"]
    assert (elsewhere / "target.txt").read_bytes() == b"theirs"


def test_the_browser_is_opened_on_a_private_file_never_with_the_token(tmp_path, monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr(lab.webbrowser, "open", lambda url: opened.append(url))
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    url = "http://127.0.0.1:1234/lab?token=" + "ab" * 24
    with ExitStack() as local:
        lab._open_browser(url, local, lambda _: None)
        for _ in range(100):
            if opened:
                break
            threading.Event().wait(0.01)
        assert len(opened) == 1 and "ab" * 24 not in opened[0] and opened[0].startswith("file://")
        page = opened[0].removeprefix("file://")
        with open(page) as f:
            assert url in f.read()
        assert stat.S_IMODE(os.stat(page).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(page)).st_mode) == 0o700
    assert not os.path.exists(page)  # removed when the lab ends


def test_the_launchers_listener_opens_channels_to_the_labs_target_only():
    sent: list[bytes] = []
    channels = mux.Channels(mux.Link(sent.append), opens_odd=False)
    listener = lab.Listener(channels)
    listener.start()
    try:
        with socket.create_connection(("127.0.0.1", listener.port)):
            for _ in range(200):
                if sent:
                    break
                threading.Event().wait(0.01)
    finally:
        listener.close()
    frames = mux.Decoder().feed(b"".join(sent))
    assert frames[0].type == mux.Type.OPEN and frames[0].channel % 2 == 0 and frames[0].payload == LAB_TARGET.encode()
    with pytest.raises(mux.ProtocolError):  # the sandbox cannot open a channel of the launcher's parity
        channels.peer_opens(frames[0].channel + 2)


def test_a_killed_launchers_private_directories_are_removed_by_the_next_lab(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"qsandbox-labwork-{int(dead.stdout)}-abc"
    live = tmp_path / f"qsandbox-labwork-{os.getpid()}-def"
    other = tmp_path / "qsandbox-labwork-notapid-x"
    for d in (stale, live, other):
        d.mkdir()
    (stale / "bell.ipynb").write_text("{}")
    made = lab._private_dir("labwork", str(tmp_path))
    assert not stale.exists() and live.exists() and other.exists()
    assert made.name.startswith(f"qsandbox-labwork-{os.getpid()}-")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_peer_uid_names_the_owner_of_a_loopback_connections_other_end():
    from qsandbox.launcher.run.lab import allowed_uids, peer_uid

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        with client, conn:
            assert peer_uid(conn) == os.geteuid()  # the kernel's owner of the client's socket: us
            assert peer_uid(client) == os.geteuid()  # and the other way round

    class Gone:  # a connection no longer in the kernel's table (its client went): nobody's
        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", 1)

        def getpeername(self) -> tuple[str, int]:
            return ("127.0.0.1", 2)

    assert peer_uid(Gone()) is None  # type: ignore[arg-type]  # duck-typed: two ports no socket has
    assert os.geteuid() in allowed_uids() and 0 in allowed_uids()
