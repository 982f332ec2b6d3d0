"""Through the sandbox's proxy: pull argv[2] MB from argv[1] on one channel, then argv[3] channels
of 1 MB at once; print the rates. (bench.py serves the bytes from the launcher's machine.)"""

import os
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

proxy = urlsplit(os.environ["HTTPS_PROXY"])
target, big, many = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def pull(size: int) -> int:
    s = socket.create_connection((proxy.hostname, proxy.port), timeout=120)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    s.sendall(f"{size}\n".encode())
    got = 0
    while got < size and (chunk := s.recv(1 << 20)):
        got += len(chunk)
    s.close()
    return got


t0 = time.perf_counter()
got = pull(big << 20)
one = time.perf_counter() - t0
done: list[int] = []
t0 = time.perf_counter()
threads = [threading.Thread(target=lambda: done.append(pull(1 << 20))) for _ in range(many)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"one {got} {one:.3f}")
print(f"many {sum(1 for d in done if d == 1 << 20)} {time.perf_counter() - t0:.3f}")
