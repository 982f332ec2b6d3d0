"""A client of a lab's JupyterLab, as a browser uses it: HTTP with the token, and a kernel's
WebSocket to run a cell. `qsandbox audit --path lab` drives a lab session with it (audit.py)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import struct
import time
import urllib.request
from typing import cast
from urllib.parse import parse_qs, urlsplit


def _request(url: str, token: str, method: str = "GET", body: object = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http://127.0.0.1 only
    request.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(request, timeout=120) as r:  # noqa: S310 - http://127.0.0.1 only
        return cast(bytes, r.read())


class _WebSocket:
    """The least of RFC 6455 a kernel's channels need: one client, text frames, pings answered."""

    def __init__(self, port: int, path: str, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: token {token}\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise OSError(f"the lab refused the kernel's channels: {status!r}")

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise OSError("the lab closed the kernel's channels")
        return data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, payload: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        size = len(payload)
        head = bytes([0x80 | opcode])
        if size < 126:
            head += bytes([0x80 | size])
        elif size < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", size)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", size)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self) -> bytes | None:
        """The next text or binary message (None: closed); pings answered on the way."""
        while True:
            first, second = self._take(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack(">H", self._take(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self._take(8))[0]
            payload = self._take(size)
            opcode = first & 0x0F
            if opcode == 8:
                return None
            if opcode == 9:
                self.send(payload, opcode=10)
            elif opcode in (1, 2):
                return payload

    def close(self) -> None:
        self.sock.close()


def execute(url: str, code: str, timeout: float = 300) -> str:
    """Run `code` in a new kernel of the lab at `url` (the printed one), as a browser does; returns
    what it printed (and the error's name, if it failed)."""
    parts = urlsplit(url)
    token = parse_qs(parts.query)["token"][0]
    base = f"http://127.0.0.1:{parts.port}"
    kernel = json.loads(_request(f"{base}/api/kernels", token, "POST", {"name": "python3"}))["id"]
    session = secrets.token_hex(16)
    ws = _WebSocket(cast(int, parts.port), f"/api/kernels/{kernel}/channels?session_id={session}", token)
    msg_id = secrets.token_hex(16)
    header = {"msg_id": msg_id, "username": "qsandbox", "session": session, "msg_type": "execute_request"}
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    message = {"header": {**header, "version": "5.3"}, "parent_header": {}, "metadata": {}, "content": content}
    ws.send(json.dumps({**message, "channel": "shell", "buffers": []}).encode())
    printed, end = [], time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            raw = ws.receive()
            if raw is None:
                break
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, body = msg.get("msg_type"), msg.get("content", {})
            if kind == "stream":
                printed.append(body.get("text", ""))
            elif kind == "error":
                printed.append(f"{body.get('ename')}: {body.get('evalue')}\n")
            elif kind == "status" and body.get("execution_state") == "idle":
                break
    finally:
        ws.close()
    return "".join(printed)
