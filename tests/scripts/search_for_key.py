"""Short-lived mode: search the whole container for the API key (given by its SHA-256), then
submit a Bell job anyway. Files, every process's environment and command line, and the memory
of every process this user may read (its own at least), for the key literal, inside a longer run,
URL-encoded, or base64/base64url-encoded.

    search_for_key.py SHA256[:LENGTH|:MIN-MAX] [--hold FILE]

--hold FILE keeps FILE's content, base64-encoded, in this process's memory during the search:
a positive control for the memory search.
"""

import base64
import hashlib
import json
import os
import re
import sys
import urllib.parse

# --- key matcher: the same block in find_other_key.py, other_user_search.py, search_for_key.py ---
# The key is known only by its SHA-256. A key is 40-48 token characters; it may sit inside a
# longer run of them, URL-encoded, or base64/base64url-encoded at any alignment: every window of a
# key's length in every long token run is hashed, in the data as it is and in each run decoded.
_CANDIDATE = re.compile(rb"[A-Za-z0-9+/_.~%=-]{40,}")  # one pass over the data finds every form
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{40,}")
_B64 = re.compile(rb"[A-Za-z0-9+/_-]{52,}={0,2}")
_LENGTHS = range(44, 45)
_OVERLAP = 4096  # a run crossing a chunk boundary is seen whole in the next chunk
_SEEN: set[bytes] = set()  # candidates already checked (memory holds many copies of the same strings)


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
digest = parse_target(sys.argv[1])
held = base64.b64encode(b"p" + open(sys.argv[3], "rb").read()) if sys.argv[2:3] == ["--hold"] else b""
found, files, mem_bytes = [], 0, 0


def scan(data: bytes, where: str) -> None:
    if where not in found and holds_key(data, digest):
        found.append(where)


for root in ["/run", "/home", "/tmp", "/dev/shm", "/work", "/etc", "/opt/qsandbox/bin"]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                if file_holds_key(path, digest):
                    found.append(path)
                files += 1
            except OSError:
                pass
scan("\n".join(f"{k}={v}" for k, v in os.environ.items()).encode(), "environment")
for pid in filter(str.isdigit, os.listdir("/proc")):
    for part in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{part}", "rb") as f:
                scan(f.read(), f"/proc/{pid}/{part}")
        except OSError:
            pass
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            for line in maps:
                addr, perms = line.split()[:2]
                if not perms.startswith("r"):
                    continue
                start, end = (int(x, 16) for x in addr.split("-"))
                if end - start > 256 << 20:
                    continue
                try:
                    mem.seek(start)
                    chunk = mem.read(end - start)
                except (OSError, ValueError, OverflowError):
                    continue
                mem_bytes += len(chunk)
                scan(chunk, f"/proc/{pid}/mem")
    except OSError:
        pass
print(f"searched {files} files and {mem_bytes >> 20} MiB of process memory; key found: {found}")
del held

from qiskit import QuantumCircuit  # noqa: E402
from qiskit.transpiler import generate_preset_pass_manager  # noqa: E402
from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2  # noqa: E402

service = QiskitRuntimeService()
backend = service.backend("fake_manila")
qc = QuantumCircuit(2)
qc.h(0)
qc.cx(0, 1)
qc.measure_all()
isa = generate_preset_pass_manager(optimization_level=1, backend=backend).run(qc)
counts = SamplerV2(mode=backend).run([isa], shots=1000).result()[0].data.meas.get_counts()
print("counts:", json.dumps(counts, sort_keys=True))
