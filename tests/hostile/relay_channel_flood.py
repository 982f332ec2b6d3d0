"""Fill every channel the relay allows, each towards a listener that never reads; then see whether
the relay still serves once they are gone. One line per step.

    relay_channel_flood.py TARGET N MIB

Opens N channels to TARGET (one thread only: non-blocking sends), asks the listener to read
nothing ("stall"), and writes into each until it blocks or MIB MiB went in. Prints "opened K of N
(first refusal: ...)", "filled: BYTES bytes in flight", then "holding" and waits until the
listener answers one more channel ("hold go", once the test releases it; at the relay's limit it is
refused: "hold: ... 503"); closes them all; then one fresh channel with "probe" ("after: ...").
"""

import os
import socket
import sys
import time

target, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/")
phost, _, pport = proxy.rpartition(":")


def tunnel(first: bytes) -> socket.socket:
    s = socket.create_connection((phost, int(pport)), timeout=120)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(4096)
        if not data:
            raise OSError(f"closed: {buf[:80]!r}")
        buf += data
    if b" 200 " not in buf.split(b"\r\n", 1)[0]:
        raise OSError(buf.split(b"\r\n", 1)[0].decode() + " " + buf.split(b"\r\n\r\n", 1)[1].decode().strip())
    s.sendall(first)
    return s


socks, first_refusal = [], ""
for i in range(n):
    try:
        socks.append(tunnel(b"stall\n"))
    except OSError as e:
        first_refusal = first_refusal or f"channel {i}: {e}"
print(f"opened {len(socks)} of {n} (first refusal: {first_refusal or 'none'})", flush=True)
block, inflight = b"z" * 65536, 0
for s in socks:
    s.setblocking(False)
    for _ in range(mib * 16):
        try:
            inflight += s.send(block)
        except BlockingIOError:
            break
        except OSError:
            break
print(f"filled: {inflight} bytes in flight", flush=True)
print("holding", flush=True)
try:  # one more channel, answered once the test releases the listener; refused at once when every
    # channel is taken (never left hanging)
    go = tunnel(b"hold go\n")
    print("released:", go.recv(100).decode().strip(), flush=True)
except OSError as e:
    print(f"hold: {type(e).__name__} {e}", flush=True)
for s in socks:
    s.close()
# The listener lets go of the stalled connections once the test releases it; until then their
# channels are rightly open. A fresh channel is answered once they are gone (tried for 60 s).
end, said = time.monotonic() + 60, ""
while time.monotonic() < end:
    try:
        p = tunnel(b"probe\n")
        p.settimeout(30)
        said = p.recv(100).decode().strip()
        break
    except OSError as e:
        said = f"{type(e).__name__} {e}"
        time.sleep(0.5)
print(f"after: {said}", flush=True)
