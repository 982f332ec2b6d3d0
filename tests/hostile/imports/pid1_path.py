"""The entry point (PID 1) imports more late in the run: the job cancel (and all of qiskit-ibm-runtime)
on an abort, a lab's modules, the relay, the token server. None of that may come from a place the
script can write. This script, as the sandbox user:

1. Asks the image's interpreter for its default import path (PID 1's is the same, less /work) and
   tries to write in each entry (or its nearest existing parent), and in the __pycache__ of every
   qsandbox module: each must be refused. Controls: the same write succeeds in every tmpfs the
   sandbox user owns.
2. Plants, in every writable tmpfs, modules named like what the abort path imports (datetime,
   qiskit_ibm_runtime, requests, numpy, ...), sitecustomize/usercustomize and a .pth; each reports
   its importer's pid on stderr. Control: with the directory put on its own path, the script's
   import finds its plant.
3. Sends SIGTERM to PID 1: an abort the script chose, which makes the entry point cancel jobs
   (importing qiskit_ibm_runtime) after the script has gone.
"""

import importlib
import json
import os
import signal
import subprocess
import sys
import time

WRITABLE = ["/tmp", "/dev/shm", "/home/sandbox/.qiskit", "/run/qsandbox", "/output"]
NAMES = ["datetime", "qiskit_ibm_runtime", "requests", "numpy", "qiskit", "ibm_cloud_sdk_core", "urllib3", "json"]


def try_write(directory):
    probe = directory
    while not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    target = os.path.join(probe, f".rt-probe-{os.getpid()}")
    try:
        with open(target, "x") as f:
            f.write("x")
    except OSError as e:
        return f"refused {directory} ({type(e).__name__})"
    os.unlink(target)
    return f"WROTE {directory} (in {probe})"


out = subprocess.run(
    [sys.executable, "-c", "import json, site, sys; print(json.dumps([sys.path[1:], site.ENABLE_USER_SITE]))"],
    cwd="/",
    capture_output=True,
    text=True,
    check=True,
).stdout
path, user_site = json.loads(out)
print("interpreter path", json.dumps(path))
print("user site enabled", user_site)
import qsandbox  # noqa: E402 - the real one: nothing of ours is in /work

package = os.path.dirname(qsandbox.__file__)
caches = [os.path.join(package, d, "__pycache__") for d in ("", "inside", "common")]
for d in [*path, *caches, os.path.join(package, "inside"), "/home/sandbox", "/home/sandbox/.local"]:
    print("path", try_write(d))
for d in WRITABLE:
    print("control", try_write(d))

plant = (
    "import os, sys\n"
    "os.write(2, b'planted %s in %s imported by pid %d\\n' % (__name__.encode(), os.path.dirname(__file__).encode(), os.getpid()))\n"
)
planted = 0
for d in WRITABLE:
    for name in [*NAMES, "sitecustomize", "usercustomize", "rt_control"]:
        with open(os.path.join(d, f"{name}.py"), "w") as f:
            f.write(plant)
        planted += 1
    with open(os.path.join(d, "zz-rt.pth"), "w") as f:
        f.write("import os; os.write(2, b'planted pth in %s ran in pid %d\\n' % (b'" + d + "', os.getpid()))\n")
print("planted", planted, flush=True)
for d in WRITABLE:
    sys.path.insert(0, d)
    sys.modules.pop("rt_control", None)
    importlib.invalidate_caches()
    importlib.import_module("rt_control")
    sys.path.remove(d)
sys.stderr.flush()
print("aborting through PID 1", flush=True)
for _ in range(60):  # again until it lands: PID 1 sets its handlers just after "go"
    os.kill(1, signal.SIGTERM)
    time.sleep(0.5)
