"""Run on the host as one OS user: look everywhere that user can reach for a key (by SHA-256).

    python other_user_search.py SHA256 SINCE

SINCE (a Unix time) limits the file search to files changed since (mtime or ctime: a copy that
keeps an old mtime still has a new ctime): the run's key cannot be in an older one. SHA256 may
carry the key's length (SHA256:44, the default, or SHA256:MIN-MAX); the key is found literal,
inside a longer run, URL-encoded, or base64/base64url-encoded.

Files: every process's environ and cmdline, every process's view of the sandbox tmpfs paths
(/proc/PID/root/...), other users' runtime dirs and homes (their container storage included),
and the temp dirs. Engines: every Docker or Podman API socket on the machine; for each one that
answers, every qsandbox container's key file through `exec` (what a docker-group member can do).
Prints one line: what was looked at, whether the key was found, and whether the control planted
in this same search (a file in /tmp, a process's argv; a key of the same shape) was found.
"""

import base64
import contextlib
import glob
import hashlib
import os
import re
import secrets
import stat
import subprocess
import sys
import time
import urllib.parse

import docker

# --- key matcher: the same block in find_other_key.py, other_user_search.py, search_for_key.py ---
# The key is known only by its SHA-256. A key is 40-48 token characters; it may sit inside a
# longer run of them, URL-encoded, or base64/base64url-encoded at any alignment: every window of a
# key's length in every long token run is hashed, in the data as it is and in each run decoded.
_CANDIDATE = re.compile(rb"[A-Za-z0-9+/_.~%=-]{40,}")  # one pass over the data finds every form
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{40,}")
_B64 = re.compile(rb"[A-Za-z0-9+/_-]{52,}={0,2}")
_LENGTHS = range(44, 45)
_OVERLAP = 4096  # a run crossing a chunk boundary is seen whole in the next chunk
_SEEN = set()  # candidates already checked (memory holds many copies of the same strings)


def parse_target(arg):
    """The digest from "SHA256[:LENGTH|:MIN-MAX]"; the key's length defaults to 44 (IBM Cloud's)."""
    global _LENGTHS
    sha, _, length = arg.partition(":")
    low, _, high = (length or "44").partition("-")
    _LENGTHS = range(int(low), int(high or low) + 1)
    return bytes.fromhex(sha)


def _windows(data, digest):
    for m in _TOKEN.finditer(data):
        run = m.group()
        for n in _LENGTHS:
            for i in range(len(run) - n + 1):
                if hashlib.sha256(run[i : i + n]).digest() == digest:
                    return True
    return False


def _candidate_holds_key(c, digest):
    if _windows(c, digest):
        return True
    if b"%" in c and _windows(urllib.parse.unquote_to_bytes(c), digest):
        return True
    for m in _B64.finditer(c):
        run = m.group().rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
        for start in range(4):
            part = run[start:]
            part = part[:-1] if len(part) % 4 == 1 else part  # a lone last character holds no byte
            part += b"=" * (-len(part) % 4)
            try:
                if _windows(base64.b64decode(part), digest):
                    return True
            except ValueError:
                continue
    return False


def holds_key(data, digest):
    """Whether `data` holds the key (literal, in a longer run, URL-encoded, base64 or base64url)."""
    for m in _CANDIDATE.finditer(data):
        c = m.group()
        if c in _SEEN:
            continue
        if _candidate_holds_key(c, digest):
            return True
        if len(c) < 4096:  # only misses are remembered: a hit must be found wherever it is
            _SEEN.add(c)
    return False


def file_holds_key(path, digest):
    """Read the whole file in chunks (each overlapping the last): whether it holds the key."""
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(8 << 20):
            if holds_key(tail + chunk, digest):
                return True
            tail = chunk[-_OVERLAP:]
    return False


# --- end of key matcher ---
digest, since = parse_target(sys.argv[1]), float(sys.argv[2])
SANDBOX_FILES = ("run/qsandbox/token", "home/sandbox/.qiskit/qiskit-ibm.json")
found, looked = [], 0


def _holds(data, d):
    global _SEEN
    _SEEN = _seen_by[d]
    return holds_key(data, d)


def check(where, data):
    global looked
    looked += 1
    if _holds(data, digest):
        found.append(where)
    if _holds(data, control_digest):
        control_found.add("file" if where == control_file else "process" if where.endswith("/cmdline") else where)


def read_proc(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


# The positive control, in this same search: a key of the same shape, planted where the search
# looks (a file in /tmp, a process's argv), known by its digest only, searched for alongside.
control = secrets.token_urlsafe(64)[: _LENGTHS.start]
control_digest = hashlib.sha256(control.encode()).digest()
control_file = f"/tmp/qsbx-control-{secrets.token_hex(6)}"  # where the search looks
with open(control_file, "w") as f:
    f.write(f"some text key={control}; more text\n")
control_proc = subprocess.Popen(["/bin/sh", "-c", "read -r _", "control", control], stdin=subprocess.PIPE)
deadline = time.monotonic() + 30
while control.encode() not in read_proc(control_proc.pid) and time.monotonic() < deadline:
    time.sleep(0.01)  # until it has exec'd: its argv is the control's
control_found = set()
_seen_by = {digest: set(), control_digest: set()}  # the matcher remembers misses: one memory per digest


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
            if not stat.S_ISREG(st.st_mode) or max(st.st_mtime, st.st_ctime) < since:
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
            # `docker exec` (the archive API reads the image's layer, not the tmpfs); any failure: next
            with contextlib.suppress(Exception):
                check(f"{sock}: {c.name}:/{path}", c.exec_run(["cat", "/" + path]).output)

control_proc.kill()
control_proc.wait()
os.unlink(control_file)
via_engine = [f for f in found if ".sock: " in f]
via_files = [f for f in found if f not in via_engine]
print(
    f"looked at {looked} files and {engines} engines ({reachable} reachable); key found: {bool(found)}; "
    f"through files: {via_files[:2]}; through engines: {via_engine[:2]}; "
    f"control found: file {'file' in control_found}, process {'process' in control_found}"
)
