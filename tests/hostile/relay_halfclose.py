"""A client that half-closes (sends its request, then shutdown(SHUT_WR)) and reads the answer, as
many HTTP/1.0 and raw-TCP clients do. One line per attempt.

    relay_halfclose.py TARGET COUNT SIZE

Each attempt opens TARGET through the proxy, sends "sink" and SIZE bytes, half-closes, and reads
until EOF. Lines: "attempt I: ANSWER" (what came back, or "nothing"), then "answered K of COUNT".
"""

import os
import socket
import sys

target, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/")
phost, _, pport = proxy.rpartition(":")
answered = 0
for i in range(count):
    s = socket.create_connection((phost, int(pport)), timeout=60)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(1)
    s.sendall(b"sink\n" + b"q" * size)
    s.shutdown(socket.SHUT_WR)
    got = b""
    try:
        while True:
            data = s.recv(4096)
            if not data:
                break
            got += data
    except OSError as e:
        got += f" ({type(e).__name__})".encode()
    s.close()
    answered += got.startswith(b"sunk")
    print(f"attempt {i}: {got.decode(errors='replace').strip() or 'nothing'}", flush=True)
print(f"answered {answered} of {count}", flush=True)
