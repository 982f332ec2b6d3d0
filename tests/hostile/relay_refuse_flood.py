"""Many refused CONNECTs, each to a different made-up name: does the launcher keep each one?

    relay_refuse_flood.py COUNT [WORKERS]

Names of about 280 characters (a counter in each), COUNT of them, WORKERS (default 1) at a time.
Prints "refused R of COUNT" at the end (R: answered 403).
"""

import os
import socket
import sys
import threading

count = int(sys.argv[1])
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/")
phost, _, pport = proxy.rpartition(":")
refused = [0] * workers
pad = ".".join(["a" * 60] * 4)


def worker(w: int) -> None:
    for i in range(w, count, workers):
        try:
            s = socket.create_connection((phost, int(pport)), timeout=60)
            s.sendall(f"CONNECT n{i:08d}.{pad}:443 HTTP/1.1\r\n\r\n".encode())
            if b" 403 " in s.recv(100):
                refused[w] += 1
            s.close()
        except OSError:
            pass


threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"refused {sum(refused)} of {count}", flush=True)
