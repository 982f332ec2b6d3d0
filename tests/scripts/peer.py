"""Two sandboxes side by side: can one reach the other? The role and a marker come from the file's
name, since a batch passes no arguments: listen_MARKER.py or connect_MARKER.py (copies of this file).

Both first connect to the platform (quantum.cloud.ibm.com:443), the control that their network
works: "platform: reached" or "platform: unreachable ERROR".

listen_MARKER.py   listens on PORT on every address, writes /tmp/listening-MARKER, prints
                   "accepted from ADDRESS" for each connection until /tmp/stop-MARKER appears
                   (written through the engine: nothing of the host is mounted), then "done"
connect_MARKER.py  waits for /tmp/targets-MARKER ([[label, host, port], ...], written the same way),
                   tries each: "LABEL: reached", "LABEL: unreachable ERROR" or "LABEL: unresolved
                   ERROR", then "done"

Every line also goes to /output/peer.txt (read from a batch's --output, whatever its printing).
"""

import json
import os
import socket
import sys
import time

PORT = 47811
WAIT = 150  # seconds, at most, for the test to write the file it is waiting for


def say(*words: object) -> None:
    line = " ".join(str(w) for w in words)
    print(line, flush=True)
    try:
        with open("/output/peer.txt", "a") as f:
            f.write(line + "\n")
    except OSError:
        pass


def try_connect(label: str, host: str, port: int) -> None:
    try:
        address = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    except OSError as e:
        say(f"{label}: unresolved", type(e).__name__)
        return
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(address)
        say(f"{label}: reached")
    except OSError as e:
        say(f"{label}: unreachable", type(e).__name__)
    finally:
        s.close()


def wait_for(path: str) -> bool:
    end = time.monotonic() + WAIT
    while not os.path.exists(path):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    time.sleep(0.1)  # written whole (made by a rename anyway)
    return True


role, _, marker = os.path.basename(sys.argv[0]).removesuffix(".py").partition("_")
try_connect("platform", "quantum.cloud.ibm.com", 443)
if role == "listen":
    listener = socket.socket()
    listener.bind(("0.0.0.0", PORT))  # noqa: S104 - the point is to be reachable if anything is
    listener.listen()
    listener.settimeout(0.2)
    open(f"/tmp/listening-{marker}", "w").close()
    stop = f"/tmp/stop-{marker}"
    end = time.monotonic() + WAIT
    while not os.path.exists(stop) and time.monotonic() < end:
        try:
            conn, peer = listener.accept()
        except OSError:
            continue
        say("accepted from", peer[0])
        conn.close()
elif role == "connect":
    if not wait_for(f"/tmp/targets-{marker}"):
        say("no targets")
        sys.exit(3)
    for label, host, port in json.load(open(f"/tmp/targets-{marker}")):
        try_connect(label, host, int(port))
else:
    sys.exit(f"unknown role {role!r}")
say("done")
