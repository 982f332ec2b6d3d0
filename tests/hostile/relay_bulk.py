"""Bulk data through one channel, both ways, checked by hash. One line per direction.

    relay_bulk.py TARGET SIZE SEED

Down: asks the listener for SIZE bytes ("source SIZE SEED") and hashes what arrives. Up: sends
SIZE bytes of its own ("sink"; random.Random(SEED + 1) in 1 MiB blocks), half-closes, and prints
the listener's answer next to its own hash. Lines: "down: BYTES SHA256", "up: sent SHA256 heard ANSWER".
"""

import hashlib
import os
import random
import socket
import sys

target, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/")
phost, _, pport = proxy.rpartition(":")


def tunnel(first: bytes) -> socket.socket:
    s = socket.create_connection((phost, int(pport)), timeout=120)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(1)
    assert b" 200 " in buf.split(b"\r\n", 1)[0], buf
    s.sendall(first)
    return s


s = tunnel(f"source {size} {seed}\n".encode())
h, got = hashlib.sha256(), 0
while True:
    data = s.recv(1 << 16)
    if not data:
        break
    h.update(data)
    got += len(data)
print(f"down: {got} {h.hexdigest()}", flush=True)
s.close()
s = tunnel(b"sink\n")
rng, h, left = random.Random(seed + 1), hashlib.sha256(), size
while left:
    block = rng.randbytes(min(left, 1 << 20))
    s.sendall(block)
    h.update(block)
    left -= len(block)
s.shutdown(socket.SHUT_WR)
answer = b""
while True:
    data = s.recv(4096)
    if not data:
        break
    answer += data
print(f"up: sent {h.hexdigest()} heard {answer.decode().strip()}", flush=True)
