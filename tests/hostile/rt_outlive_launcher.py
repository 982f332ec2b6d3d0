"""Red team: outlive the launcher while the script still runs: daemons that leave the script's
process group (setsid, double fork; PID 1 adopts them), one that ignores every signal it can, and
a zombie nobody waits for. Prints "sleeping" and sleeps; the test kills the launcher."""

import contextlib
import os
import signal
import sys
import time

for kind in ("plain", "deaf"):
    if os.fork() == 0:
        os.setsid()
        if os.fork():
            os._exit(0)
        if kind == "deaf":
            for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, signal.SIG_IGN)
        os.closerange(0, 3)
        while True:
            time.sleep(1)
if os.fork() == 0:
    os._exit(0)  # a zombie: never waited for
print(f"daemons started; marker {sys.argv[-1]}", flush=True)
print("sleeping", flush=True)
while True:
    time.sleep(1)
