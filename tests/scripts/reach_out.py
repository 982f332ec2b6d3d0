"""From a local-platform run: can anything outside the run's network be reached?"""
import socket
import sys

routes = open("/proc/net/route").read().splitlines()[1:]
print("default route:", any(line.split()[1] == "00000000" for line in routes))
try:
    socket.getaddrinfo("pypi.org", 443)
    print("dns: resolved")
except OSError:
    print("dns: failed")
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.settimeout(3)
try:
    s.connect((host, port))
    print("host listener: reached")
except OSError as e:
    print("host listener: unreachable", type(e).__name__)
