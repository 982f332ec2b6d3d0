"""Through the sandbox's proxy (HTTPS_PROXY), CONNECT to the host in argv[1] and trade one line.

Prints `status: <the proxy's status line>` and `answer: <what came back>`; no qsandbox imports.
"""

import os
import socket
import sys
from urllib.parse import urlsplit

proxy = urlsplit(os.environ["HTTPS_PROXY"])
target = sys.argv[1]
s = socket.create_connection((proxy.hostname, proxy.port), timeout=30)
s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        break
    head += chunk
print("status:", head.split(b"\r\n")[0].decode())
if b" 200 " in head:
    s.sendall(b"ping " + sys.argv[2].encode() + b"\n")
    print("answer:", s.makefile().readline().strip())
