"""From a local-platform run: can anything outside the run's network be reached?

    reach_out.py HOST PORT             the listener HOST:PORT, and the default route's gateway
    reach_out.py --targets MARKER      print "ready", wait for the JSON file /tmp/targets-MARKER
                                       ([[label, host, port], ...], made through the engine: nothing
                                       of the host is mounted), try each of them
    reach_out.py --targets-json JSON   the same, targets given inline (a positive control run)

Each target prints "LABEL: reached" or "LABEL: unreachable ERROR"; DNS prints "dns: resolved" or
"dns: failed".
"""

import json
import os
import socket
import struct
import sys
import time


def try_connect(label: str, host: str, port: int) -> None:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        print(f"{label}: reached", flush=True)
    except OSError as e:
        print(f"{label}: unreachable", type(e).__name__, flush=True)
    finally:
        s.close()


def dns() -> None:
    try:
        socket.getaddrinfo("pypi.org", 443)
        print("dns: resolved", flush=True)
    except OSError:
        print("dns: failed", flush=True)


if sys.argv[1] in ("--targets", "--targets-json"):
    if sys.argv[1] == "--targets":
        path = "/tmp/targets-" + sys.argv[2]
        print("ready", flush=True)
        end = time.monotonic() + 120
        while not os.path.exists(path) and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.1)  # written whole
        targets = json.load(open(path))
    else:
        targets = json.loads(sys.argv[2])
    dns()
    for label, host, port in targets:
        try_connect(label, host, int(port))
    print("done", flush=True)
    sys.exit(0)

dns()
port = int(sys.argv[2])
try_connect("host listener", sys.argv[1], port)
for line in open("/proc/net/route").read().splitlines()[1:]:
    fields = line.split()
    if fields[1] == "00000000":  # the default route's gateway: the host side of the network
        gateway = socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
        try_connect("gateway", gateway, port)
