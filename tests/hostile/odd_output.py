"""Leave an odd /output: argv[1] is one of full (fill it until ENOSPC), many (200,000 empty files),
deep (a tree 2,000 levels deep), modes (a 0600 file, an executable, a hard link)."""

import os
import sys

what = sys.argv[1]
if what == "full":
    n = 0
    try:
        with open("/output/big.bin", "wb") as f:
            while True:
                f.write(b"\xa5" * (1 << 20))
                n += 1
    except OSError as e:
        print(f"filled: {n} MiB ({e.strerror})", flush=True)
    print("size", os.path.getsize("/output/big.bin"))
elif what == "many":
    for i in range(200_000):
        os.close(os.open(f"/output/f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
    print("made 200000 files")
elif what == "deep":
    os.chdir("/output")
    for _ in range(2000):
        os.mkdir("d")
        os.chdir("d")
    with open("leaf.txt", "w") as f:
        f.write("leaf")
    print("made a tree 2000 deep")
elif what == "modes":
    with open("/output/private.txt", "w") as f:
        f.write("p")
    os.chmod("/output/private.txt", 0o600)
    with open("/output/tool.sh", "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    os.chmod("/output/tool.sh", 0o755)
    os.link("/output/private.txt", "/output/again.txt")
    print("made modes")
