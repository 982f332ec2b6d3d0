"""The sandbox's only way out: an HTTP CONNECT proxy on its own loopback, relayed by the launcher.

The sandbox has network mode `none`: loopback only, no resolver. The entry point (PID 1,
non-dumpable, out of the script's reach) listens on 127.0.0.1:RELAY_PORT, and HTTPS_PROXY /
HTTP_PROXY point there, so `requests` (the IBM client, ibm-cloud-sdk-core) work unchanged. Each
CONNECT becomes a channel of the attach stream (common/mux.py); the launcher alone decides whether
the target may be reached (it normalises the name, checks the allowlist, resolves and connects on
its own machine) and answers ACCEPT or REFUSE. Nothing is decided here, and nothing is resolved:
the target goes to the launcher as the client wrote it. A plain-HTTP request (absolute URI) is sent
as "http://host:port", which the launcher refuses without connecting and names; every answer to
such a request is 403. TLS runs end to end between the script and the host: neither the entry
point nor the launcher sees the key or a token in what they relay.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit

from ..common import mux
from ..common.paths import RELAY_PORT

HEAD_LIMIT = 8192  # a CONNECT request's head is a few lines
HEAD_TIMEOUT = 30.0  # a client that never finishes its request head is dropped
ANSWER_TIMEOUT = 60.0  # the launcher's verdict (it resolves and connects meanwhile)


def _reply(conn: socket.socket, status: str, why: str = "") -> None:
    body = (why + "\n").encode("ascii", "replace") if why else b""
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    with contextlib.suppress(OSError):
        conn.sendall(head + body)


def _read_head(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """The request head and whatever the client sent after it; None if it is not one."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > HEAD_LIMIT:
            return None
        data = conn.recv(4096)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def target_of(request_line: bytes) -> str | None:
    """The target a request line asks for: CONNECT's "host:port" as written; for a plain-HTTP
    absolute URI "http://host:port", which the launcher refuses (and names) without connecting;
    None for anything else."""
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    method, target = parts[0], parts[1].decode("ascii", "replace")
    if method == b"CONNECT":
        return target[: mux.MAX_TARGET]
    try:
        url = urlsplit(target)
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return None
    if not url.hostname:
        return None
    return f"http://{url.hostname}:{port}"[: mux.MAX_TARGET]


class ConnectServer:
    """Accepts the script's proxy connections and opens one relay channel for each."""

    def __init__(self, channels: mux.Channels) -> None:
        self.channels = channels
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", RELAY_PORT))
        self.sock.listen(128)

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True, name="relay-accept").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
            except RuntimeError:  # no thread to be had (the sandbox's pids limit): this one is refused
                _reply(conn, "503 Service Unavailable", "qsandbox: no room for another connection")
                conn.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(HEAD_TIMEOUT)
            got = _read_head(conn)
            conn.settimeout(None)
        except OSError:
            conn.close()
            return
        target = target_of(got[0].split(b"\r\n", 1)[0]) if got else None
        if got is None or target is None:
            _reply(conn, "400 Bad Request", "qsandbox: only CONNECT host:443 leaves the sandbox")
            conn.close()
            return
        connect = got[0].startswith(b"CONNECT ")
        try:
            ch = self.channels.open(conn, target.encode("ascii", "replace"))
        except OSError:
            conn.close()
            return
        if ch is None:
            _reply(conn, "503 Service Unavailable", "qsandbox: too many connections at once")
            conn.close()
            return
        if not ch.opened.wait(ANSWER_TIMEOUT):
            _reply(conn, "504 Gateway Timeout", "qsandbox: no answer from the launcher")
            ch.abort()  # CLOSE (and our socket closed): the launcher drops the connection when it is made
            return
        if ch.refusal is not None or not connect:
            _reply(conn, "403 Forbidden", f"qsandbox: {ch.refusal or 'plain HTTP is not relayed'}")
            if ch.refusal is None:  # a plain-HTTP target the launcher let through: never relayed
                ch.abort()
            conn.close()
            return
        try:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            ch.start(first=got[1])
        except (OSError, RuntimeError):  # RuntimeError: no thread to be had (the pids limit)
            ch.abort()
