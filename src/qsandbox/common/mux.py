"""The one framed protocol on a sandbox's attach stream, both ways (both sides import this module).

The sandbox has no network (network mode `none`): its stdin and stdout, attached by the launcher,
are its only way out. Everything that crosses them is a frame of this module: the start message,
the inputs, heartbeats and aborts, the script's stdout and stderr, the channels of the egress
relay, and /output. (The engine splits and joins the entry point's stdout into frames of its own;
ours survive that: `Decoder` reassembles them from any cut of the bytes.)

Frame: a 9-byte header, then the payload.

    type     1 byte    Type below; any other value is a protocol error
    channel  4 bytes   big-endian; what the frame belongs to
    length   4 bytes   big-endian; at most MAX_PAYLOAD, else a protocol error

Fixed channels:
    0 CONTROL  JSON messages of `common.handoff` (start, abort, access_token, alive), both ways
    1 STDOUT, 2 STDERR   the script's output, sandbox -> launcher, DATA then EOF
    3 OUTPUT   the /output tar stream, sandbox -> launcher, DATA then EOF (one per run)
    4 INPUTS   the /work tar stream, launcher -> sandbox, DATA then EOF (right after start)
The fixed data channels carry no credit: each has one reader, which consumes at once (a terminal,
the extractor, the unpacker), so the stream itself is their back-pressure.

Relay channels (one per CONNECT of the script's): ids from FIRST_RELAY up, odd ids opened by the
sandbox, even ids by the launcher, each side's strictly increasing, never reused in a run.
    OPEN    payload: the target "host:port" as the client asked for it (at most MAX_TARGET bytes)
    ACCEPT  the peer connected; data may flow
    REFUSE  payload: a short reason; the channel is over
    DATA    payload: bytes; the sender must hold credit for them
    WINDOW  payload: 4 bytes, credit the receiver grants back after it has passed data on
    EOF     the sender sends no more DATA (half close)
    CLOSE   the channel is over for the sender; frames for it that arrive later are dropped
Each side may send at most WINDOW bytes of DATA on a channel beyond what the other granted back,
and at most MAX_CHANNELS relay channels are open at once: so a channel nobody reads, or hundreds of
channels, hold at most MAX_CHANNELS * WINDOW bytes on the other side, and stall no other channel
(each has its own threads, and the reader of the stream never waits on one). A side that breaks a
rule (unknown type, oversized frame, DATA past the window, an id reused or out of its range) has
broken the stream: the launcher ends the run.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from enum import IntEnum

HEADER = struct.Struct(">BII")
MAX_PAYLOAD = 64 * 1024
WINDOW = 256 * 1024
MAX_CHANNELS = 256  # two threads each in the entry point: 512, half the sandbox's default pids limit (1024)
MAX_TARGET = 300
GRANT_AT = 64 * 1024  # credit is given back in batches of this size (fewer WINDOW frames)
OUTBOX = 1024  # answers (REFUSE, CLOSE) waiting to go out

CONTROL, STDOUT, STDERR, OUTPUT, INPUTS = 0, 1, 2, 3, 4
FIRST_RELAY = 16


class Type(IntEnum):
    CONTROL = 0
    OPEN = 1
    ACCEPT = 2
    REFUSE = 3
    DATA = 4
    WINDOW = 5
    EOF = 6
    CLOSE = 7


class ProtocolError(ValueError):
    """The other side broke the stream's rules."""


# typing is imported only by the type checker: the entry point imports this module on every run, and
# typing costs it 3 ms of CPU. TYPE_CHECKING here is a plain False that mypy reads as True.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple

    class Frame(NamedTuple):
        type: Type
        channel: int
        payload: bytes

else:
    from collections import namedtuple

    Frame = namedtuple("Frame", "type channel payload")


def frame(type_: Type, channel: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    return HEADER.pack(type_, channel, len(payload)) + payload


def data_frames(channel: int, data: bytes) -> list[bytes]:
    """`data` on `channel` as DATA frames of at most MAX_PAYLOAD each."""
    view = memoryview(data)
    return [frame(Type.DATA, channel, bytes(view[i : i + MAX_PAYLOAD])) for i in range(0, len(data), MAX_PAYLOAD)]


def window_frame(channel: int, credit: int) -> bytes:
    return frame(Type.WINDOW, channel, struct.pack(">I", credit))


class Decoder:
    """Frames out of a byte stream cut anywhere. Holds at most one frame's bytes."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= HEADER.size:
            kind, channel, size = HEADER.unpack_from(self._buf)
            if kind > max(Type) or size > MAX_PAYLOAD:
                raise ProtocolError(f"bad frame header (type {kind}, {size} bytes)")
            end = HEADER.size + size
            if len(self._buf) < end:
                break
            frames.append(Frame(Type(kind), channel, bytes(self._buf[HEADER.size : end])))
            del self._buf[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of a frame not yet complete (at the stream's end: a truncated frame)."""
        return len(self._buf)


class Link:
    """The sending half of the stream: whole frames, one writer at a time."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._lock = threading.Lock()

    def send(self, *frames: bytes) -> None:
        with self._lock:
            for f in frames:
                self._write(f)


class Channel:
    """One relayed connection: a socket on this side, a channel on the stream.

    Two threads: `_up` reads the socket and sends DATA while it holds credit; `_down` writes what
    the peer sent into the socket and grants the credit back. `on_*` are called by the stream's
    reader and never block.
    """

    def __init__(self, link: Link, ident: int, sock: socket.socket, gone: Callable[[Channel], None]) -> None:
        self.link, self.ident, self.sock, self._gone = link, ident, sock, gone
        self._cond = threading.Condition()
        self._credit = WINDOW  # what we may still send
        self._queue: deque[bytes] = deque()
        self._queued = 0  # what the peer sent that is not yet written (at most WINDOW)
        self._peer_eof = False
        self._peer_closed = False  # the peer sent CLOSE: what it sent before is still written, then we end
        self._closed = False
        self._ends = 0  # our two directions that are done
        self.opened = threading.Event()  # the opener's: ACCEPT or REFUSE arrived
        self.refusal: str | None = None  # REFUSE's reason

    def start(self, first: bytes = b"") -> None:
        """Relay from now on; `first`: bytes the socket already gave (sent to the peer first)."""
        self._first = first[:WINDOW]
        threading.Thread(target=self._up, daemon=True, name=f"relay-up-{self.ident}").start()
        threading.Thread(target=self._down, daemon=True, name=f"relay-down-{self.ident}").start()

    # -- from the stream's reader ---------------------------------------------------------------

    def on_data(self, payload: bytes) -> None:
        with self._cond:
            if self._closed:
                return
            if self._peer_eof or self._queued + len(payload) > WINDOW:
                raise ProtocolError(f"channel {self.ident}: data past its window or its end")
            self._queue.append(payload)
            self._queued += len(payload)
            self._cond.notify_all()

    def on_window(self, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(f"channel {self.ident}: bad window frame")
        with self._cond:
            self._credit += struct.unpack(">I", payload)[0]
            if self._credit > WINDOW:
                raise ProtocolError(f"channel {self.ident}: credit past the window")
            self._cond.notify_all()

    def on_eof(self) -> None:
        with self._cond:
            self._peer_eof = True
            self._cond.notify_all()

    def on_close(self) -> None:
        """The peer is done with the channel: what it sent before is written out (an answer and its
        end often arrive together), then the channel ends, without a word back."""
        with self._cond:
            self._peer_eof = self._peer_closed = True
            self._cond.notify_all()

    # -- the two directions ---------------------------------------------------------------------

    def _up(self) -> None:
        try:
            if self._first:
                with self._cond:
                    self._credit -= len(self._first)
                self.link.send(*data_frames(self.ident, self._first))
            while True:
                with self._cond:
                    while self._credit <= 0 and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    want = min(self._credit, MAX_PAYLOAD)
                data = self.sock.recv(want)
                if not data:
                    self.link.send(frame(Type.EOF, self.ident))
                    break
                with self._cond:
                    if self._closed:
                        return
                    self._credit -= len(data)
                self.link.send(frame(Type.DATA, self.ident, data))
        except OSError:
            self._finish(tell=True)
            return
        self._end()

    def _down(self) -> None:
        owed = 0
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._peer_eof and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    if not self._queue:  # the peer's EOF, everything written
                        break
                    chunk = self._queue.popleft()
                    last = self._peer_closed and not self._queue
                self.sock.sendall(chunk)
                with self._cond:
                    self._queued -= len(chunk)
                owed += len(chunk)
                if (owed >= GRANT_AT or not self._queue) and not last:
                    self.link.send(window_frame(self.ident, owed))
                    owed = 0
            if self._peer_closed:  # nothing more will come, and nothing we send is read: over
                self._finish(tell=False)
                return
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish(tell=True)
            return
        self._end()

    def _end(self) -> None:
        with self._cond:
            self._ends += 1
            both = self._ends == 2
        if both:
            self._finish(tell=True)

    def _finish(self, *, tell: bool) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked on it in the other thread
        self.sock.close()
        if tell:
            with contextlib.suppress(OSError):
                self.link.send(frame(Type.CLOSE, self.ident))
        self._gone(self)

    def abort(self) -> None:
        """This side ends it (the run is over): the peer is told."""
        self._finish(tell=True)


class Channels:
    """The relay channels of one stream: who may open which id, how many at once, and dispatch.

    The side that opens a channel makes its `Channel` and sends OPEN (`open`), then waits on
    `channel.opened`; the other side checks the OPEN (`peer_opens`), connects, then `accepted`
    (ACCEPT is sent) or `refuse`. Frames for a channel that is over are dropped; a CLOSE for one
    still connecting cancels it.
    """

    def __init__(self, link: Link, *, opens_odd: bool) -> None:
        self.link = link
        self._ours = 1 if opens_odd else 0  # the parity of the ids this side opens
        self._live: dict[int, Channel | None] = {}  # None: the peer's OPEN, we are connecting
        self._last = {0: FIRST_RELAY - 2, 1: FIRST_RELAY - 1}  # highest id opened so far, per parity
        self._lock = threading.Lock()
        self._opening = threading.Lock()
        # What the stream's reader answers (REFUSE, a CLOSE) goes out from another thread: the reader
        # must never wait on the stream's other direction (each side's reader waiting on the other's
        # would be a deadlock). Bounded: a peer that opens and never reads breaks the stream.
        self._outbox: queue.Queue[bytes] = queue.Queue(maxsize=OUTBOX)
        self._poster: threading.Thread | None = None

    def _post(self, data: bytes) -> None:
        if self._poster is None:
            self._poster = threading.Thread(target=self._drain, daemon=True, name="relay-answers")
            self._poster.start()
        try:
            self._outbox.put_nowait(data)
        except queue.Full:
            raise ProtocolError(f"more than {OUTBOX} answers the peer does not read") from None

    def _drain(self) -> None:
        while True:
            data = self._outbox.get()
            try:
                self.link.send(data)
            except OSError:
                return

    def open(self, sock: socket.socket, target: bytes) -> Channel | None:
        """A new channel of ours for `sock`, its OPEN sent (not started: wait on `opened`); None if too
        many are open. Ids go out in the order they are made (the peer holds us to it): `_opening`
        keeps making and sending together, apart from `_lock`, which the stream's reader takes and
        which is never held while sending."""
        with self._opening:
            with self._lock:
                if len(self._live) >= MAX_CHANNELS:
                    return None
                self._last[self._ours] += 2
                ch = Channel(self.link, self._last[self._ours], sock, self._gone)
                self._live[ch.ident] = ch
            try:
                self.link.send(frame(Type.OPEN, ch.ident, target[:MAX_TARGET]))
            except BaseException:
                self.forget(ch.ident)
                raise
            return ch

    def peer_opens(self, ident: int) -> bool:
        """Check the peer's OPEN. False: too many open (refuse it); ProtocolError: a broken rule."""
        with self._lock:
            parity = ident % 2
            if ident < FIRST_RELAY or parity == self._ours or ident <= self._last[parity]:
                raise ProtocolError(f"channel {ident} opened out of order or reused")
            self._last[parity] = ident
            if len(self._live) >= MAX_CHANNELS:
                return False
            self._live[ident] = None
            return True

    def accepted(self, ident: int, sock: socket.socket) -> Channel | None:
        """The peer's channel is connected: ACCEPT sent, its `Channel` (start it). None: the peer
        cancelled it meanwhile (close `sock`)."""
        with self._lock:
            if ident not in self._live:
                return None
            ch = Channel(self.link, ident, sock, self._gone)
            self._live[ident] = ch
        self.link.send(frame(Type.ACCEPT, ident))
        return ch

    def refuse(self, ident: int, reason: str) -> None:
        """Refuse the peer's channel (from any thread; never waits on the stream)."""
        self.forget(ident)
        self._post(frame(Type.REFUSE, ident, reason.encode()[:200]))

    def forget(self, ident: int) -> None:
        with self._lock:
            self._live.pop(ident, None)

    def _gone(self, channel: Channel) -> None:
        self.forget(channel.ident)

    def _get(self, ident: int) -> tuple[bool, Channel | None]:
        """(live, channel): (True, None) for the peer's channel still connecting; (False, None) for
        one that is over. ProtocolError for an id never opened."""
        with self._lock:
            if ident in self._live:
                return True, self._live[ident]
            if ident < FIRST_RELAY or ident > self._last[ident % 2]:
                raise ProtocolError(f"frame for channel {ident}, never opened")
            return False, None

    def dispatch(self, f: Frame) -> None:
        """ACCEPT, REFUSE, DATA, WINDOW, EOF and CLOSE of a relay channel (OPEN is the side's own)."""
        live, ch = self._get(f.channel)
        if ch is None:
            if live and f.type == Type.CLOSE:  # cancelled while we connect: `accepted` will say so
                self.forget(f.channel)
            elif not live and f.type == Type.ACCEPT:  # we gave up on it; the peer holds a connection
                self._post(frame(Type.CLOSE, f.channel))
            return  # anything else for it: dropped
        if f.type in (Type.ACCEPT, Type.REFUSE):
            if f.channel % 2 != self._ours:
                raise ProtocolError(f"channel {f.channel}: answered by the side that opened it")
            ch.refusal = f.payload.decode("ascii", "replace") if f.type == Type.REFUSE else None
            if f.type == Type.REFUSE:
                self.forget(f.channel)
            ch.opened.set()
        elif f.type == Type.DATA:
            ch.on_data(f.payload)
        elif f.type == Type.WINDOW:
            ch.on_window(f.payload)
        elif f.type == Type.EOF:
            ch.on_eof()
        elif f.type == Type.CLOSE:
            ch.on_close()
        else:
            raise ProtocolError(f"frame type {f.type.name} on relay channel {f.channel}")

    def count(self) -> int:
        with self._lock:
            return len(self._live)

    def close_all(self) -> None:
        with self._lock:
            live = [c for c in self._live.values() if c is not None]
            self._live.clear()
        for c in live:
            c.abort()
