"""Look everywhere this sandbox can read for another run's key (given by its SHA-256).

    find_other_key.py SHA256[:LENGTH|:MIN-MAX] [ROOT ...]

ROOTs default to every place a sandbox might reach; a positive control names its own.
Prints "looked at N files; other key found: BOOL", then the places it was found.
"""

import base64
import hashlib
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

digest = parse_target(sys.argv[1])
roots = sys.argv[2:] or ["/proc", "/run", "/home", "/tmp", "/dev/shm", "/work", "/etc"]
found, looked = [], 0
for root in roots:
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.startswith("/proc/") and dirpath.count("/") > 3:
            dirnames[:] = []
        for name in filenames:
            if root == "/proc" and name not in ("environ", "cmdline"):
                continue
            path = os.path.join(dirpath, name)
            try:
                hit = file_holds_key(path, digest)
            except OSError:
                continue
            looked += 1
            if hit:
                found.append(path)
print(f"looked at {looked} files; other key found: {bool(found)}")
print("found in:", " ".join(sorted(found)))
