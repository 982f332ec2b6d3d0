import os
import sys

path = os.path.expanduser(sys.argv[1])
written = 0
chunk = b"x" * 4096
try:
    with open(os.path.join(path, "fill"), "wb") as f:
        while written < 4 << 30:
            f.write(chunk)
            f.flush()
            written += len(chunk)
except OSError as e:
    print(f"full after {written} bytes: {e.strerror}")
