"""Open channels from many threads at once, as a client with a thread pool does. One line at the end.

    relay_concurrent.py TARGET THREADS EACH

THREADS threads each open EACH channels to TARGET, one after another, send "probe" and read the
answer. Prints "answered K of THREADS*EACH" and the first failure, if any.
"""

import os
import socket
import sys
import threading

target, threads, each = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/")
phost, _, pport = proxy.rpartition(":")
ok, failures = [0] * threads, []


def worker(w: int) -> None:
    for _ in range(each):
        try:
            s = socket.create_connection((phost, int(pport)), timeout=60)
            s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = s.recv(4096)
                if not data:
                    raise OSError(f"proxy closed after {buf[:40]!r}")
                buf += data
            s.sendall(b"probe\n")
            if s.recv(100).startswith(b"probe ok"):
                ok[w] += 1
            s.close()
        except OSError as e:
            failures.append(f"{type(e).__name__} {e}")


pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
print(f"answered {sum(ok)} of {threads * each}", flush=True)
print(f"first failure: {failures[0] if failures else 'none'}", flush=True)
