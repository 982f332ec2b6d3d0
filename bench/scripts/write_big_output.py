import os
import sys

size = int(sys.argv[1]) << 20
block = os.urandom(1 << 20)
with open("/output/data.bin", "wb") as f:
    for _ in range(size >> 20):
        f.write(block)
