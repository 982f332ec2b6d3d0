"""Try to gain privileges; print what happened to each attempt."""

import os
import socket
import subprocess


def attempt(name, fn):
    try:
        fn()
        print(f"{name}: OK")
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"{name}: {getattr(e, 'strerror', None) or type(e).__name__}")


attempt("setuid 0", lambda: os.setuid(0))
attempt("setgroups 0", lambda: os.setgroups([0]))
attempt("raw socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("chown to root", lambda: (open("/tmp/f", "w").close(), os.chown("/tmp/f", 0, 0)))
attempt("mknod", lambda: os.mknod("/tmp/dev", 0o600 | 0o060000, os.makedev(8, 0)))
attempt(
    "exec from /tmp",
    lambda: (
        open("/tmp/run.sh", "w").write("#!/bin/sh\necho hi\n"),
        os.chmod("/tmp/run.sh", 0o755),
        subprocess.run(["/tmp/run.sh"], check=True, capture_output=True),
    ),
)
su = subprocess.run(["su", "-c", "id -u"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
print("su gives uid 0:", su.stdout.strip() == "0")
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print("CapEff:", status["CapEff"].strip(), "NoNewPrivs:", status["NoNewPrivs"].strip())
