"""/work holds datetime.py beside this script. The script's own import finds it (python's rules:
the script's directory first), which shows the file is there to be found; then the script waits for
--timeout, whose abort makes the entry point import datetime (to cancel the run's jobs)."""

import time

try:
    import datetime  # noqa: F401 - the shadow: it raises
except ImportError:
    print("control: the script's import found /work/datetime.py", flush=True)
time.sleep(120)
