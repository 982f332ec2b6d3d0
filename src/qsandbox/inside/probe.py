"""Runs inside a probe container for `qsandbox doctor`: report, from the inside, what holds.

Prints one JSON object. The launcher compares it with what it asked for.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import stat

from ..common.paths import QISKIT_DIR, SECRET_DIR


def _status_field(name: str) -> str:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return ""


def _mount(path: str) -> dict[str, object] | None:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] == path:
                return {
                    "fstype": fields[sep + 1],
                    "options": sorted(set(fields[5].split(",")) | set(fields[sep + 3].split(","))),
                }
    return None


def _tmpfs(path: str) -> dict[str, object]:
    info: dict[str, object] = {"mount": _mount(path)}
    st = os.stat(path)
    info["mode"] = oct(stat.S_IMODE(st.st_mode))
    info["owner"] = st.st_uid
    vfs = os.statvfs(path)
    info["size"] = vfs.f_blocks * vfs.f_frsize
    probe = os.path.join(path, ".probe")
    try:
        with open(probe, "w") as f:
            f.write("x")
        os.unlink(probe)
        info["writable"] = True
    except OSError:
        info["writable"] = False
    return info


def report() -> dict[str, object]:
    try:
        with open("/.qsandbox-probe", "w"):
            pass
        root_ro = False
    except OSError as e:
        root_ro = e.errno == errno.EROFS
    return {
        "uid": os.getuid(),
        "core_limit": list(resource.getrlimit(resource.RLIMIT_CORE)),
        "gid": os.getgid(),
        "cap_eff": int(_status_field("CapEff") or "0", 16),
        "cap_bnd": int(_status_field("CapBnd") or "0", 16),
        "no_new_privs": _status_field("NoNewPrivs") == "1",
        "root_read_only": root_ro,
        "qiskit_dir": _tmpfs(str(QISKIT_DIR)),
        "secret_dir": _tmpfs(str(SECRET_DIR)),
    }


def main() -> int:
    print(json.dumps(report()))
    return 0
