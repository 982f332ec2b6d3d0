"""Many channels at once, two slow-loris clients, and output that must keep flowing. One line per step.

    relay_flood.py TARGET N

TARGET (host:443) is an allowed listener of the test's. The script prints "tick I" lines all along,
then: a slow-loris client that sends its CONNECT head one byte every 0.2 s and never finishes it;
a channel to TARGET that asks the listener to push data ("push") and never reads it; N channels to
TARGET, each sending "hold I" (the listener holds them open until the test releases them), all open
at once ("opened N of N"); then one more channel, "probe", answered at once while the others are
held ("probe: ..."); then the held ones' answers as they come ("released K of N"). Blocking
sockets, no thread per channel: the sandbox's pids limit counts threads.
"""

import os
import selectors
import socket
import sys
import threading
import time

target, n = sys.argv[1], int(sys.argv[2])
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/")
phost, _, pport = proxy.rpartition(":")
stop = threading.Event()


def ticker() -> None:
    i = 0
    while not stop.is_set():
        print(f"tick {i}", flush=True)
        i += 1
        time.sleep(0.02)


def tunnel(first: bytes) -> socket.socket:
    s = socket.create_connection((phost, int(pport)), timeout=120)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(1)
        if not data:
            raise OSError(f"proxy closed: {buf!r}")
        buf += data
    if b" 200 " not in buf.split(b"\r\n", 1)[0]:
        raise OSError(buf.split(b"\r\n", 1)[0].decode())
    s.sendall(first)
    return s


def loris() -> None:
    s = socket.create_connection((phost, int(pport)))
    for ch in f"CONNECT {target} HTTP/1.1\r\nX-Slow: ".encode() + b"a" * 100000:
        if stop.is_set():
            return
        try:
            s.send(bytes([ch]))
        except OSError as e:
            print(f"slow-loris head: {type(e).__name__} after a while", flush=True)
            return
        time.sleep(0.2)


threading.Thread(target=ticker, daemon=True).start()
threading.Thread(target=loris, daemon=True).start()
pusher = tunnel(b"push\n")  # never read
held = []
for i in range(n):
    try:
        held.append(tunnel(f"hold {i}\n".encode()))
    except OSError as e:
        print(f"channel {i}: {type(e).__name__} {e}", flush=True)
print(f"opened {len(held)} of {n}", flush=True)
probe = tunnel(b"probe\n")
print("probe:", probe.recv(100).decode().strip(), flush=True)
probe.close()
sel = selectors.DefaultSelector()
for s in held:
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
released = 0
while released < len(held):
    for key, _ in sel.select(timeout=600):
        data = key.fileobj.recv(100)
        sel.unregister(key.fileobj)
        if data.startswith(b"released"):
            released += 1
        key.fileobj.close()
print(f"released {released} of {n}", flush=True)
stop.set()
pusher.close()
