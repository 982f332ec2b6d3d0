"""The stream's one protocol (common/mux.py) and the relay's authority (launcher/run/relay.py), without an engine.

The decoder is fuzzed (random and truncated frames, oversized lengths, unknown types, any cut of
the bytes); the channel rules (ids, windows, a closed channel reused) are checked one by one; and
two ends are wired back to back over socketpairs to carry data both ways under the windows.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsandbox.common import mux
from qsandbox.common.errors import UsageError
from qsandbox.launcher.run import relay
from qsandbox.launcher.run.relay import Egress, Relay, normalise, parse_connect_to

frames_st = st.lists(
    st.tuples(
        st.sampled_from(list(mux.Type)),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=3000),
    ),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(frames=frames_st, cuts=st.lists(st.integers(1, 5000), min_size=1, max_size=50))
def test_frames_survive_any_cut_of_the_bytes(frames, cuts):
    data = b"".join(mux.frame(t, c, p) for t, c, p in frames)
    d = mux.Decoder()
    got, i, k = [], 0, 0
    while i < len(data):
        n = cuts[k % len(cuts)]
        got += d.feed(data[i : i + n])
        i, k = i + n, k + 1
    assert [(f.type, f.channel, f.payload) for f in got] == frames
    assert d.pending == 0


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=4000), cut=st.integers(1, 600))
def test_random_bytes_give_frames_or_a_protocol_error_and_never_more_memory(data, cut):
    d = mux.Decoder()
    try:
        for i in range(0, len(data), cut):
            for f in d.feed(data[i : i + cut]):
                assert len(f.payload) <= mux.MAX_PAYLOAD and isinstance(f.type, mux.Type)
            assert d.pending < mux.HEADER.size + mux.MAX_PAYLOAD
    except mux.ProtocolError:
        pass


def test_an_oversized_length_is_refused_at_its_header_before_any_payload():
    d = mux.Decoder()
    with pytest.raises(mux.ProtocolError, match="bad frame header"):
        d.feed(mux.HEADER.pack(mux.Type.DATA, 1, mux.MAX_PAYLOAD + 1))
    with pytest.raises(ValueError):
        mux.frame(mux.Type.DATA, 1, b"x" * (mux.MAX_PAYLOAD + 1))


def test_an_unknown_type_is_refused():
    with pytest.raises(mux.ProtocolError):
        mux.Decoder().feed(mux.HEADER.pack(max(mux.Type) + 1, 1, 0))


def test_a_truncated_frame_yields_nothing_and_stays_pending():
    whole = mux.frame(mux.Type.DATA, mux.STDOUT, b"hello")
    d = mux.Decoder()
    assert d.feed(whole[:-1]) == [] and d.pending == len(whole) - 1
    assert d.feed(whole[-1:]) == [mux.Frame(mux.Type.DATA, mux.STDOUT, b"hello")]


# -- channel rules --------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def frames(self) -> list[mux.Frame]:
        return mux.Decoder().feed(b"".join(self.sent))


def launcher_side() -> tuple[mux.Channels, Sink]:
    sink = Sink()
    return mux.Channels(mux.Link(sink.write), opens_odd=False), sink


def test_ids_must_be_the_peers_parity_and_increase_and_are_never_reused():
    chans, _ = launcher_side()
    assert chans.peer_opens(17)
    for bad in (16, 15, 3, 17):  # ours, below the range, a fixed channel, reused
        with pytest.raises(mux.ProtocolError):
            chans.peer_opens(bad)
    chans.refuse(17, "no")  # over
    with pytest.raises(mux.ProtocolError):
        chans.peer_opens(17)  # a closed channel reused
    assert chans.peer_opens(19)


def test_frames_for_a_closed_channel_are_dropped_and_for_a_never_opened_one_break_the_stream():
    chans, _ = launcher_side()
    assert chans.peer_opens(17)
    chans.refuse(17, "no")
    chans.dispatch(mux.Frame(mux.Type.DATA, 17, b"late"))  # dropped, no error
    with pytest.raises(mux.ProtocolError, match="never opened"):
        chans.dispatch(mux.Frame(mux.Type.DATA, 21, b"x"))


def test_at_most_max_channels_at_once():
    chans, _ = launcher_side()
    ids = [mux.FIRST_RELAY + 1 + 2 * i for i in range(mux.MAX_CHANNELS + 1)]
    assert all(chans.peer_opens(i) for i in ids[:-1])
    assert not chans.peer_opens(ids[-1])
    chans.refuse(ids[0], "done")
    assert chans.peer_opens(ids[-1] + 2)


def connected_channel() -> tuple[mux.Channels, Sink, socket.socket, mux.Channel]:
    chans, sink = launcher_side()
    assert chans.peer_opens(17)
    mine, theirs = socket.socketpair()
    ch = chans.accepted(17, mine)
    assert ch is not None
    return chans, sink, theirs, ch


def test_data_past_the_window_or_credit_past_it_breaks_the_stream():
    chans, _, theirs, ch = connected_channel()
    theirs.setblocking(False)  # nobody reads: what arrives must stay within the window
    chans.dispatch(mux.Frame(mux.Type.DATA, 17, b"x" * mux.WINDOW))
    with pytest.raises(mux.ProtocolError, match="window"):
        chans.dispatch(mux.Frame(mux.Type.DATA, 17, b"y"))
    with pytest.raises(mux.ProtocolError, match="credit"):
        chans.dispatch(mux.Frame(mux.Type.WINDOW, 17, struct.pack(">I", 1)))
    with pytest.raises(mux.ProtocolError):
        chans.dispatch(mux.Frame(mux.Type.WINDOW, 17, b"\x00"))  # not 4 bytes
    ch.abort()
    theirs.close()


def test_the_opener_cannot_answer_its_own_channel():
    chans, _, theirs, ch = connected_channel()
    with pytest.raises(mux.ProtocolError, match="answered by the side that opened it"):
        chans.dispatch(mux.Frame(mux.Type.ACCEPT, 17, b""))
    ch.abort()
    theirs.close()


# -- two ends, back to back -----------------------------------------------------------------------


class Wire:
    """Two Channels tables joined by decoders: what one side's Link sends, the other dispatches."""

    def __init__(self) -> None:
        self.inside = mux.Channels(mux.Link(lambda b: self._to(self.launcher_d, self.launcher, b)), opens_odd=True)
        self.launcher = mux.Channels(mux.Link(lambda b: self._to(self.inside_d, self.inside, b)), opens_odd=False)
        self.inside_d, self.launcher_d = mux.Decoder(), mux.Decoder()
        self._lock = threading.Lock()
        self.on_open: Callable[[mux.Frame], None] | None = None

    def _to(self, decoder: mux.Decoder, chans: mux.Channels, data: bytes) -> None:
        with self._lock:
            frames = decoder.feed(data)
        for f in frames:
            if f.type == mux.Type.OPEN:
                assert self.on_open is not None
                self.on_open(f)
            else:
                chans.dispatch(f)


def test_data_flows_both_ways_under_the_windows_and_memory_stays_bounded():
    wire = Wire()
    server, far = socket.socketpair()  # the launcher's side connects to `far`'s peer
    client, near = socket.socketpair()  # the script's connection; `near` is the entry's end
    payload = os.urandom(5 << 20)

    def on_open(f: mux.Frame) -> None:
        assert wire.launcher.peer_opens(f.channel)
        ch = wire.launcher.accepted(f.channel, server)
        assert ch is not None
        ch.start()

    wire.on_open = on_open
    ch = wire.inside.open(near, b"x:443")
    assert ch is not None
    assert ch.opened.wait(5) and ch.refusal is None
    ch.start()

    got = bytearray()
    peak = [0]

    def read_far() -> None:
        while len(got) < len(payload):
            time.sleep(0.001)  # a slow reader: the window, not memory, absorbs it
            data = far.recv(1 << 16)
            if not data:
                return
            got.extend(data)
            launcher_ch = wire.launcher._live.get(ch.ident)  # the bound under test
            if launcher_ch is not None:
                peak[0] = max(peak[0], launcher_ch._queued)

    reader = threading.Thread(target=read_far)
    reader.start()
    client.sendall(payload)
    reader.join(60)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert peak[0] <= mux.WINDOW
    far.sendall(b"answer")
    assert client.recv(100) == b"answer"
    far.shutdown(socket.SHUT_WR)  # EOF travels back as EOF
    client.settimeout(5)
    assert client.recv(100) == b""
    client.close()
    deadline = time.monotonic() + 5
    while (wire.inside.count() or wire.launcher.count()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert wire.inside.count() == 0 and wire.launcher.count() == 0  # both ends closed and forgotten
    far.close()


# -- the launcher's authority ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("quantum.cloud.ibm.com:443", ("quantum.cloud.ibm.com", 443)),
        ("QUANTUM.Cloud.IBM.com.:443", ("quantum.cloud.ibm.com", 443)),
        ("quantum.cloud.ibm.com:80", "port 443 only"),
        ("quantum.cloud.ibm.com:0443", "port 443 only"),
        ("quantum.cloud.ibm.com", "port 443 only"),
        ("user@quantum.cloud.ibm.com:443", "userinfo, percent-encoding or a path"),
        ("quantum%2ecloud.ibm.com:443", "userinfo, percent-encoding or a path"),
        ("1.2.3.4:443", "an IP address"),
        ("[::1]:443", "an IP address"),
        ("127.1:443", "not a host name"),
        ("0x7f.1:443", "not a host name"),
        ("a_b.example:443", "not a host name"),
        ("localhost:443", "not a host name"),
    ],
)
def test_targets_are_normalised_or_refused(target, expected):
    assert normalise(target) == expected


def test_connect_to_takes_curls_form_for_443_only():
    assert parse_connect_to("quantum.cloud.ibm.com:443:127.0.0.1:8443") == (
        "quantum.cloud.ibm.com",
        ("127.0.0.1", 8443),
    )
    assert parse_connect_to("X.example:443:[::1]:9") == ("x.example", ("::1", 9))
    for bad in ("quantum.cloud.ibm.com:80:127.0.0.1:8443", "1.2.3.4:443:127.0.0.1:1", "a.b:443:c:99999", "junk"):
        with pytest.raises(UsageError):
            parse_connect_to(bad)


def test_a_refused_name_is_never_resolved_or_connected_and_is_named(monkeypatch):
    """Only an allowed name reaches `connect` (the only place that resolves); every other is refused
    at once and counted for the closing line."""
    asked: list[str] = []

    def fake_connect(host: str, egress: Egress) -> socket.socket:
        asked.append(host)
        raise OSError("no route in a unit test")

    monkeypatch.setattr(relay, "connect", fake_connect)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail(f"resolved {a}"))
    sink = Sink()
    r = Relay(mux.Link(sink.write), Egress(frozenset({"quantum.cloud.ibm.com"})))
    targets = ["6b6579.quantum.cloud.ibm.com:443", "evil.example:443", "quantum.cloud.ibm.com:443"]
    for i, t in enumerate(targets):
        r.on_frame(mux.Frame(mux.Type.OPEN, mux.FIRST_RELAY + 1 + 2 * i, t.encode()))
    deadline = time.monotonic() + 5
    while len([f for f in sink.frames() if f.type == mux.Type.REFUSE]) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert asked == ["quantum.cloud.ibm.com"]
    refusals = [f.payload.decode() for f in sink.frames() if f.type == mux.Type.REFUSE]
    assert len(refusals) == 3 and any("unreachable from the launcher" in x for x in refusals)
    assert r.summary() == "6b6579.quantum.cloud.ibm.com:443, evil.example:443"


def test_what_arrives_with_a_close_is_still_written_before_the_channel_ends():
    """An answer, its EOF and CLOSE often arrive back to back: the answer reaches the socket whole
    (it was dropped when CLOSE closed the socket at once: 13 answers in 20 lost)."""
    chans, sink = launcher_side()
    assert chans.peer_opens(17)
    mine, theirs = socket.socketpair()
    ch = chans.accepted(17, mine)
    assert ch is not None
    answer = os.urandom(200_000)
    for i in range(0, len(answer), mux.MAX_PAYLOAD):
        chans.dispatch(mux.Frame(mux.Type.DATA, 17, answer[i : i + mux.MAX_PAYLOAD]))
    chans.dispatch(mux.Frame(mux.Type.EOF, 17, b""))
    chans.dispatch(mux.Frame(mux.Type.CLOSE, 17, b""))
    ch.start()  # started after it all arrived, as a channel whose 200 is still being written
    got = bytearray()
    theirs.settimeout(10)
    while chunk := theirs.recv(1 << 16):
        got += chunk
    assert bytes(got) == answer
    deadline = time.monotonic() + 5
    while chans.count() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert chans.count() == 0
    assert (mux.Type.CLOSE, 17) not in [(f.type, f.channel) for f in sink.frames()]  # no word back to a CLOSE
    theirs.close()


def test_refused_targets_are_named_up_to_a_bound_and_the_rest_counted(monkeypatch):
    sink = Sink()
    r = Relay(mux.Link(sink.write), Egress(frozenset()))
    for i in range(relay.NAMED + 30):
        r.on_frame(mux.Frame(mux.Type.OPEN, mux.FIRST_RELAY + 1 + 2 * i, f"name{i:03d}.example:443".encode()))
    r.on_frame(mux.Frame(mux.Type.OPEN, mux.FIRST_RELAY + 1 + 2 * 60, b"name000.example:443"))
    listed = r.summary()
    assert listed.startswith("name000.example:443 x2, name001.example:443,")
    assert listed.endswith(", and 30 more") and listed.count(".example:443") == relay.NAMED


def test_plain_http_is_refused_by_name_and_never_connected(monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr(relay, "connect", lambda host, egress: asked.append(host))
    from qsandbox.inside.relay import target_of

    target = target_of(b"GET http://quantum.cloud.ibm.com:443/x HTTP/1.1")
    assert target == "http://quantum.cloud.ibm.com:443" and normalise(target) == "plain HTTP"
    sink = Sink()
    r = Relay(mux.Link(sink.write), Egress(frozenset({"quantum.cloud.ibm.com"})))
    r.on_frame(mux.Frame(mux.Type.OPEN, mux.FIRST_RELAY + 1, target.encode()))
    time.sleep(0.2)
    assert asked == [] and r.summary() == "http://quantum.cloud.ibm.com:443"
