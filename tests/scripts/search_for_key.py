"""Short-lived mode: search the whole container for the API key (given by its SHA-256), then
submit a Bell job anyway. Files, every process's environment and command line, and the memory
of every process this user may read (its own at least)."""

import hashlib
import json
import os
import re
import sys

target = sys.argv[1]
token = re.compile(rb"[A-Za-z0-9_-]{40,48}")
found, files, mem_bytes = [], 0, 0


def scan(data: bytes, where: str) -> None:
    for m in token.finditer(data):
        if hashlib.sha256(m.group()).hexdigest() == target:
            found.append(where)


for root in ["/run", "/home", "/tmp", "/dev/shm", "/work", "/etc", "/opt/qsandbox/bin"]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    scan(f.read(1 << 20), os.path.join(dirpath, name))
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
