"""Read host files and write outside /output; print what happened to each attempt."""

import sys

marker = sys.argv[1]
for target in [marker, "/etc/shadow", "/var/run/docker.sock", "/root/.bash_history"]:
    try:
        with open(target, "rb") as f:
            f.read(16)
        print(f"read {target}: OK")
    except OSError as e:
        print(f"read {target}: {e.strerror}")
for target in ["/work/x", "/x", "/home/sandbox/x", "/usr/lib/x", "/output/ok"]:
    try:
        with open(target, "w") as f:
            f.write("x")
        print(f"write {target}: OK")
    except OSError as e:
        print(f"write {target}: {e.strerror}")
