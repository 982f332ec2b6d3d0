"""Hold the key until the test has searched the live sandbox, then exit with the code given.

hold_then_exit.py CODE MARKER    (waits for /tmp/go-MARKER, made through the engine: audit.release)
"""

import os
import sys
import time

go = "/tmp/go-" + sys.argv[2]
print("holding", flush=True)
end = time.monotonic() + 120
while not os.path.exists(go) and time.monotonic() < end:
    time.sleep(0.05)
print("about to exit", sys.argv[1], flush=True)
sys.exit(int(sys.argv[1]))
