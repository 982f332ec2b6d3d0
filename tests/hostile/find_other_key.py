"""Look everywhere this sandbox can read for another run's key (given by its SHA-256)."""

import hashlib
import os
import re
import sys

target = sys.argv[1]
token = re.compile(rb"[A-Za-z0-9_-]{40,48}")
found, looked = False, 0
roots = ["/proc", "/run", "/home", "/tmp", "/dev/shm", "/work", "/etc"]
for root in roots:
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.startswith("/proc/") and dirpath.count("/") > 3:
            dirnames[:] = []
        for name in filenames:
            if root == "/proc" and name not in ("environ", "cmdline"):
                continue
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    data = f.read(1 << 20)
            except OSError:
                continue
            looked += 1
            for m in token.finditer(data):
                if hashlib.sha256(m.group()).hexdigest() == target:
                    found = True
print(f"looked at {looked} files; other key found: {found}")
