"""From a sandbox with network mode `none`: any way out but the launcher's relay? One line per attempt.

    relay_raw.py JSON    JSON: [[label, kind, host, port], ...], kind "tcp" (connect, send the
                         label), "udp" (one datagram holding the label), "dns" (a DNS query for
                         "<label>.example.test" as a UDP datagram to host:port)

Also: the interfaces the sandbox has (/proc/net/dev), a lookup through the system resolver, a DNS
query to each nameserver of /etc/resolv.conf, and the same TCP attempts with the proxy variables
gone (a client that ignores them). Lines: "LABEL: REACHED" / "LABEL: SENT" or "LABEL: <errno name>".
"""

import errno
import json
import os
import socket
import struct
import sys


def err(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, type(e).__name__)


def dns_query(name: str) -> bytes:
    head = struct.pack(">HHHHHH", 0x5153, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return head + qname + struct.pack(">HH", 1, 1)


def tcp(label: str, host: str, port: int) -> None:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(5)
    try:
        s.connect((host, port))
        s.sendall(label.encode() + b"\n")
        print(f"{label}: REACHED", flush=True)
    except OSError as e:
        print(f"{label}: {err(e)}", flush=True)
    finally:
        s.close()


def udp(label: str, host: str, port: int, payload: bytes) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(payload, (host, port))
        print(f"{label}: SENT", flush=True)
    except OSError as e:
        print(f"{label}: {err(e)}", flush=True)
    finally:
        s.close()


with open("/proc/net/dev") as f:
    names = sorted(line.split(":")[0].strip() for line in f.read().splitlines()[2:])
print("interfaces:", " ".join(names), flush=True)
targets = json.loads(sys.argv[1])
for label, kind, host, port in targets:
    if kind == "tcp":
        tcp(label, host, int(port))
    elif kind == "udp":
        udp(label, host, int(port), label.encode())
    elif kind == "dns":
        udp(label, host, int(port), dns_query(f"{label}.example.test"))
try:
    socket.getaddrinfo("resolver-probe.example.test", 443)
    print("system resolver: RESOLVED", flush=True)
except OSError as e:
    print(f"system resolver: {type(e).__name__}", flush=True)
with open("/etc/resolv.conf") as f:
    servers = [line.split()[1] for line in f if line.startswith("nameserver")]
for i, server in enumerate(servers):
    udp(f"nameserver {i}", server, 53, dns_query("nameserver-probe.example.test"))
for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
    os.environ.pop(var, None)
for label, kind, host, port in targets:
    if kind == "tcp":
        tcp(f"{label} (no proxy variables)", host, int(port))
