"""Run on the host as one OS user: look everywhere that user can reach for a key (by SHA-256).

    python other_user_search.py SHA256 SINCE

SINCE (a Unix time) limits the file search to files modified since: the run's key cannot be in
an older one.

Files: every process's environ and cmdline, every process's view of the sandbox tmpfs paths
(/proc/PID/root/...), other users' runtime dirs and homes (their container storage included),
and the temp dirs. Engines: every Docker or Podman API socket on the machine; for each one that
answers, every qsandbox container's key file through `exec` (what a docker-group member can do).
Prints one line: what was looked at, and whether the key was found.
"""

import glob
import hashlib
import os
import re
import stat
import sys

import docker

target, since = sys.argv[1], float(sys.argv[2])
token = re.compile(rb"[A-Za-z0-9_-]{40,48}")
SANDBOX_FILES = ("run/qsandbox/token", "home/sandbox/.qiskit/qiskit-ibm.json")
found, looked = [], 0


def check(where, data):
    global looked
    looked += 1
    if any(hashlib.sha256(m.group()).hexdigest() == target for m in token.finditer(data)):
        found.append(where)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return None


for pid in filter(str.isdigit, os.listdir("/proc")):
    for path in [f"/proc/{pid}/environ", f"/proc/{pid}/cmdline"] + [f"/proc/{pid}/root/{p}" for p in SANDBOX_FILES]:
        data = read(path)
        if data is not None:
            check(path, data)

for root in ["/run/user", "/home", "/tmp", "/var/tmp", "/dev/shm"]:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_mtime < since:
                continue
            data = read(path)
            if data is not None:
                check(path, data)

engines, reachable = 0, 0
for sock in ["/var/run/docker.sock", *glob.glob("/run/user/*/podman/podman.sock")]:
    if not os.path.exists(sock):
        continue
    engines += 1
    try:
        client = docker.DockerClient(base_url=f"unix://{sock}", timeout=10)
        containers = client.containers.list(filters={"label": "qsandbox.run"})
    except Exception:  # noqa: BLE001 - not reachable by this user: that is the point
        continue
    reachable += 1
    for c in containers:
        for path in SANDBOX_FILES:
            try:  # `docker exec` (the archive API reads the image's layer, not the tmpfs)
                check(f"{sock}: {c.name}:/{path}", c.exec_run(["cat", "/" + path]).output)
            except Exception:  # noqa: BLE001
                pass

via_engine = [f for f in found if ".sock: " in f]
via_files = [f for f in found if f not in via_engine]
print(
    f"looked at {looked} files and {engines} engines ({reachable} reachable); key found: {bool(found)}; "
    f"through files: {via_files[:2]}; through engines: {via_engine[:2]}"
)
