"""The egress proxy's container: tinyproxy with a default-deny allowlist, and a dead-man switch.

    python -m qsandbox.inside.proxy --allow REGEX... --client-subnet CIDR [--port 8888]

Runs in its own container from the qsandbox image, with the sandbox's hardening, on the run's
internal network (where the sandbox is) and on an ordinary one (the way out). The configuration
goes into the /tmp tmpfs; tinyproxy runs in the foreground with no log file, pid file or user
switch, so it writes nothing to disk. Its log comes to us on a pipe; we pass on only one line per
refused request, `refused HOST:PORT`, for the launcher's closing line (never a URL's path or
query, which could hold anything the script put there). When the launcher goes away (EOF on our
stdin) the proxy is stopped at once and the container ends.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

TINYPROXY = "/usr/bin/tinyproxy"
CONF_DIR = "/tmp"  # noqa: S108 - the container's own tmpfs
READY = "qsandbox-proxy: ready"
FILTERED = re.compile(r'refused on filtered (?:url|domain)\s+"([^"\s]+)"')
PORT_REFUSED = re.compile(r"Refused CONNECT method on port (\d+)")
CONNECT_REQUEST = re.compile(r"Request \(file descriptor \d+\): CONNECT (\S+) ")


def config(port: int, subnet: str, filter_file: str) -> str:
    """tinyproxy 1.11: default deny on the whole "host:port" of CONNECT and on plain-HTTP URLs."""
    return "\n".join(
        [
            f"Port {port}",
            "Listen 0.0.0.0",
            f"Allow {subnet}",  # only the run's own network may use it
            "Timeout 600",
            "MaxClients 50",
            "LogLevel Info",  # Info also logs refused CONNECT ports
            "DisableViaHeader Yes",
            "ConnectPort 443",
            f'Filter "{filter_file}"',
            "FilterURLs On",  # match "host:port" of CONNECT and the full URL of plain HTTP
            "FilterType ere",  # lowercase: 1.11.0/1.11.1 fall back to BRE silently otherwise
            "FilterDefaultDeny Yes",
            "",
        ]
    )


class Refusals:
    """Reads tinyproxy's log, one line at a time; says host:port of each refused request, never a
    URL's path or query. A refused port is logged without its host, so the CONNECT line before it
    (same port) names the host."""

    def __init__(self) -> None:
        self._last_connect: dict[str, str] = {}

    def feed(self, line: str) -> str | None:
        if m := CONNECT_REQUEST.search(line):
            target = m.group(1)
            self._last_connect[target.rsplit(":", 1)[-1]] = target
            return None
        if m := PORT_REFUSED.search(line):
            return self._last_connect.get(m.group(1), f"?:{m.group(1)}")
        if m := FILTERED.search(line):
            target = m.group(1)
            if "://" in target:
                parts = urlsplit(target)
                return f"{parts.hostname or '?'}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
            return target.split("/", 1)[0]
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qsandbox.inside.proxy")
    parser.add_argument("--allow", action="append", default=[], help="anchored ERE for host:port")
    parser.add_argument("--client-subnet", required=True)
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args(argv)
    filter_file = os.path.join(CONF_DIR, "allow.txt")
    conf_file = os.path.join(CONF_DIR, "tinyproxy.conf")
    with open(filter_file, "w") as f:
        f.write("\n".join(args.allow) + "\n")
    with open(conf_file, "w") as f:
        f.write(config(args.port, args.client_subnet, filter_file))
    proxy = subprocess.Popen([TINYPROXY, "-d", "-c", conf_file], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def end(*_: object) -> None:
        proxy.kill()
        os._exit(0)

    signal.signal(signal.SIGTERM, lambda *_: end())
    threading.Thread(target=_exit_on_eof, args=(end,), daemon=True).start()
    _wait_listening(args.port, proxy)
    print(READY, flush=True)
    assert proxy.stdout is not None  # noqa: S101 - Popen with stdout=PIPE
    refusals = Refusals()
    for raw in proxy.stdout:
        target = refusals.feed(raw.decode(errors="replace"))
        if target:
            print(f"refused {target}", flush=True)
    return proxy.wait()


def _wait_listening(port: int, proxy: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if proxy.poll() is not None:
            out = proxy.stdout.read().decode(errors="replace") if proxy.stdout else ""
            print(f"qsandbox-proxy: tinyproxy exited: {out.strip()[-300:]}", file=sys.stderr, flush=True)
            os._exit(1)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    print("qsandbox-proxy: tinyproxy did not listen within 10 s", file=sys.stderr, flush=True)
    os._exit(1)


def _exit_on_eof(end: Callable[[], None]) -> None:
    """Dead-man switch: the launcher holds our stdin; when it goes away, so do we."""
    while os.read(0, 4096):
        pass
    end()


if __name__ == "__main__":
    sys.exit(main())
