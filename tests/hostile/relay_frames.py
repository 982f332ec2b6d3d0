"""Speak for the entry point on the stream: write frames of the launcher's protocol where they
would be taken for the entry's. One line per attempt.

- open the entry point's stdout (/proc/1/fd/1, each thread's /proc/1/task/T/fd/1) and stdin for
  writing: it is non-dumpable PID 1, so this must be refused;
- our own descriptors: none may be a socket or a pipe other than our own stdout and stderr;
- write whole forged frames (an OPEN of relay channel 17 for "forged.test:443", a DATA frame of
  the OUTPUT channel, a CONTROL message) on our own stdout and stderr: they must arrive as the
  text of our output, framed by the entry point, and be acted on by nobody;
- send the same bytes into the proxy's port as if it were the stream.
"""

import os
import socket
import struct
import sys


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BII", kind, channel, len(payload)) + payload


forged = (
    frame(1, 17, b"forged.test:443")
    + frame(4, 3, b"forged-output")
    + frame(0, 0, b'{"type": "abort", "reason": "interrupt"}')
)
paths = ["/proc/1/fd/0", "/proc/1/fd/1", "/proc/1/fd/2"]
try:
    paths += [f"/proc/1/task/{t}/fd/1" for t in sorted(os.listdir("/proc/1/task"))]
except OSError as e:
    print(f"list /proc/1/task: {e.strerror}", flush=True)
for path in paths:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, forged)
        os.close(fd)
        print(f"WROTE {path}", flush=True)
    except OSError as e:
        print(f"open {path}: {e.strerror}", flush=True)
for fd in sorted(int(x) for x in os.listdir("/proc/self/fd")):
    try:
        what = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if fd in (0, 1, 2) or not what.startswith(("socket:", "pipe:")):
        continue
    print(f"fd {fd}: {what}", flush=True)
print("own fds checked", flush=True)
sys.stdout.buffer.write(b"forged on stdout: " + forged + b"\n")
sys.stdout.flush()
sys.stderr.buffer.write(b"forged on stderr: " + forged + b"\n")
sys.stderr.flush()
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(forged + b"\r\n\r\n")
print("proxy port answered:", s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace"), flush=True)
s.close()
print("still running", flush=True)
