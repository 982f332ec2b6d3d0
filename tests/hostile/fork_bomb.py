import os
import time

children = 0
try:
    while True:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children += 1
except OSError as e:
    print(f"fork refused after {children} children: {e.strerror}", flush=True)
