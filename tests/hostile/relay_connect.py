"""Ask the sandbox's proxy (HTTPS_PROXY) for things one at a time; one line per attempt.

    relay_connect.py JSON    JSON: [[label, request_line], ...]; each request line (for example
                             "CONNECT evil.test:443 HTTP/1.1") is sent with a Host header

A 200 is followed by "hello LABEL\\n" through the tunnel and the first line that comes back (a
listener of the test answers with its own name). Lines: "LABEL: 403 <reason>" or
"LABEL: 200 <what came back>" or "LABEL: <error>".
"""

import json
import os
import socket
import sys

proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/")
host, _, port = proxy.rpartition(":")


def head(s: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(4096)
        if not data:
            break
        buf += data
    top, _, rest = buf.partition(b"\r\n\r\n")
    return top, rest


for label, line in json.loads(sys.argv[1]):
    s = socket.create_connection((host, int(port)), timeout=30)
    try:
        s.sendall(line.encode() + b"\r\nHost: x\r\n\r\n")
        top, rest = head(s)
        status = top.split(b"\r\n", 1)[0].decode(errors="replace")
        code = status.split(" ")[1] if " " in status else status
        if code != "200":
            while True:
                data = s.recv(4096)
                if not data:
                    break
                rest += data
            print(f"{label}: {code} {rest.decode(errors='replace').strip()}", flush=True)
            continue
        s.sendall(f"hello {label}\n".encode())
        got = b""
        while not got.endswith(b"\n"):
            data = s.recv(1)
            if not data:
                break
            got += data
        print(f"{label}: 200 {got.decode(errors='replace').strip()}", flush=True)
    except OSError as e:
        print(f"{label}: {type(e).__name__} {e}", flush=True)
    finally:
        s.close()
