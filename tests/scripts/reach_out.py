"""From a local-platform run: can anything outside the run's network be reached?"""

import socket
import struct
import sys


def try_connect(label: str, host: str, port: int) -> None:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        print(f"{label}: reached")
    except OSError as e:
        print(f"{label}: unreachable", type(e).__name__)
    finally:
        s.close()


try:
    socket.getaddrinfo("pypi.org", 443)
    print("dns: resolved")
except OSError:
    print("dns: failed")
port = int(sys.argv[2])
try_connect("host listener", sys.argv[1], port)
for line in open("/proc/net/route").read().splitlines()[1:]:
    fields = line.split()
    if fields[1] == "00000000":  # the default route's gateway: the host side of the network
        gateway = socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
        try_connect("gateway", gateway, port)
