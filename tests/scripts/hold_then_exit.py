"""Hold the key until the test has searched the live sandbox, then exit with the code given.

hold_then_exit.py CODE MARKER    (waits for the file go-MARKER beside this script)
"""

import os
import sys
import time

go = os.path.join(os.path.dirname(os.path.abspath(__file__)), "go-" + sys.argv[2])
print("holding", flush=True)
end = time.monotonic() + 120
while not os.path.exists(go) and time.monotonic() < end:
    time.sleep(0.05)
print("about to exit", sys.argv[1], flush=True)
sys.exit(int(sys.argv[1]))
