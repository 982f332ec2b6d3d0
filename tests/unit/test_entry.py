from __future__ import annotations

import pytest

from qsandbox.common.handoff import Start
from qsandbox.inside.entry import saved_account


@pytest.mark.parametrize("channel", ["ibm_quantum_platform", "ibm_cloud"])
@pytest.mark.parametrize("instance", [None, "crn:v1:bluemix:public:quantum-computing:us-east:a/x:y::"])
def test_saved_account_matches_the_clients_own_format(channel, instance):
    accounts = pytest.importorskip("qiskit_ibm_runtime.accounts")
    token = "k" * 44
    expected = accounts.Account.create_account(channel=channel, token=token, instance=instance).to_saved_format()
    expected["is_default_account"] = True
    name = accounts.management.AccountManager._get_default_account_name(channel)
    ours = saved_account(Start(token=token, channel=channel, instance=instance))
    assert ours == {name: expected}
    loaded = accounts.Account.from_saved_format(ours[name])  # and the client reads it back as the same
    assert loaded.token == token and loaded.instance == instance and loaded.channel == channel


def test_heartbeats_keep_the_silence_watchdog_quiet_and_silence_trips_it():
    """The entry point's second dead-man switch, with a short timeout (the real one is 20 s)."""
    import queue
    import threading
    import time

    from qsandbox.common.handoff import ALIVE, Alive, decode
    from qsandbox.inside.entry import _watch_silence

    assert isinstance(decode(ALIVE), Alive)
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    heard = [time.monotonic()]
    threading.Thread(target=_watch_silence, args=(events, heard, 0.6), daemon=True).start()
    for _ in range(8):  # 1.2 s of heartbeats every 0.15 s: no alarm
        time.sleep(0.15)
        heard[0] = time.monotonic()
    assert events.empty()
    assert events.get(timeout=3) == ("silent", "")  # then silence


def test_output_a_token_makes_the_redactor_hold_back_still_arrives(monkeypatch):
    """Once the script's client reported a token, a chunk that ends in base64 characters ("404") is
    held back whole; the stream goes on (it was taken for EOF, and the rest of stdout was lost)."""
    import os
    import threading
    import time

    from qsandbox.common import mux
    from qsandbox.common.redact import Redactor
    from qsandbox.inside import entry

    sent: list[bytes] = []
    monkeypatch.setattr(entry, "LINK", mux.Link(sent.append))
    script = entry.Script.__new__(entry.Script)
    script.out, script.err, script.tok, script.redact = os.pipe(), os.pipe(), os.pipe(), True
    script._lock, script._silenced = threading.Lock(), False  # what __init__ sets
    script.redactors = {mux.STDOUT: Redactor([]), mux.STDERR: Redactor([])}
    copy = threading.Thread(target=script._copy, daemon=True)  # the loop under test
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    os.write(script.tok[1], token.encode() + b"\n")
    copy.start()
    time.sleep(0.3)
    for chunk in (b"GET job:", b" ", b"404"):  # as print() writes them; "404" is held back whole
        os.write(script.out[1], chunk)
        time.sleep(0.3)
    os.write(script.out[1], b"\nprinted with " + token.encode() + b"\nEND\n")
    for fd in (script.out[1], script.err[1], script.tok[1]):
        os.close(fd)
    copy.join(5)
    assert not copy.is_alive()
    frames = mux.Decoder().feed(b"".join(sent))
    stdout = b"".join(f.payload for f in frames if f.channel == mux.STDOUT and f.type == mux.Type.DATA)
    assert stdout == b"GET job: 404\nprinted with ***\nEND\n"
    assert (mux.Type.EOF, mux.STDOUT) in [(f.type, f.channel) for f in frames]  # its end is said
