"""Stream into one channel until killed: for a launcher SIGKILLed mid-transfer.

    relay_hold.py TARGET

Opens TARGET through the proxy, says "stream", prints "streaming" once 1 MiB went through, and
keeps sending until the sandbox ends. If the channel ever ends first it says so ("ended: ...").
"""

import os
import socket
import sys

target = sys.argv[1]
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/")
phost, _, pport = proxy.rpartition(":")
s = socket.create_connection((phost, int(pport)))
s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(1)
print(buf.split(b"\r\n", 1)[0].decode(), flush=True)
s.sendall(b"stream\n")
sent, said = 0, False
try:
    while True:
        s.sendall(b"x" * 65536)
        sent += 65536
        if sent >= 1 << 20 and not said:
            print("streaming", flush=True)
            said = True
except OSError as e:
    print(f"ended: {type(e).__name__} after {sent} bytes", flush=True)
