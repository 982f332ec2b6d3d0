"""Red team: an /output file whose apparent size is SIZE bytes (argument) while it holds no data
(a sparse file: ftruncate on tmpfs allocates nothing). The entry point sends st_size bytes, the
launcher's budget is the data it accepts. With `daemon`, a process that left the script's group
(setsid, a second fork) sleeps on: it lives as long as PID 1 does. The last argument is a marker
for the test to find this sandbox by."""

import os
import sys
import time

size, daemon = int(sys.argv[1]), "daemon" in sys.argv[2:]
with open("/output/huge.bin", "wb") as f:
    f.truncate(size)
st = os.stat("/output/huge.bin")
if daemon and os.fork() == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    os.closerange(0, 3)
    while True:
        time.sleep(1)
print(f"/output/huge.bin: {st.st_size} bytes apparent, {st.st_blocks * 512} allocated", flush=True)
