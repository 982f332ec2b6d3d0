"""The launcher's end of the egress relay: the one authority on what leaves a sandbox, and how.

A sandbox of `--platform ibm` has network mode `none`. The script's HTTPS goes to the CONNECT
proxy of its entry point (inside/relay.py), and each CONNECT arrives here as an OPEN on the run's
attach stream (common/mux.py) with the target as the client wrote it. Here, outside the sandbox:

- the target is normalised (lower case, no trailing dot) and refused unless it is exactly
  "NAME:443" with NAME a DNS name: no userinfo, no percent-encoding, no IP literal (v4, v6,
  or numeric forms such as 127.1), no other port;
- NAME must be on the allowlist, exactly: egress.HOSTS (every host qiskit-ibm-runtime contacts)
  plus `--allow-host`. A refused target is never resolved, so no name the script makes up
  (`<the key in hex>.quantum.cloud.ibm.com`) reaches a resolver; it gets 403 inside and is
  named in the run's closing line;
- an allowed name is resolved and connected to from this machine (or through the launcher's own
  HTTPS_PROXY, a campus or corporate proxy, with CONNECT), or where `--connect-to` sends it,
  and the bytes are relayed both ways, under the stream's per-channel windows.
TLS runs end to end between the script and the host: nothing relayed here is readable.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import re
import socket
import threading
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ...common import mux
from ...common.errors import UsageError
from ...common.paths import RELAY_PORT
from ...common.text import shown

CONNECT_TIMEOUT = 30.0
NAMED = 10  # distinct targets named in the closing line; the rest are counted
NAME_LENGTH = 100  # characters of each named one (a target may be 300)
_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")


def normalise(target: str) -> tuple[str, int] | str:
    """(name, 443) for a target the allowlist may be asked about, else why it is refused."""
    if target.startswith("http://"):  # a plain-HTTP request (inside/relay.py): never connected
        return "plain HTTP"
    if "@" in target or "%" in target or "/" in target:
        return "userinfo, percent-encoding or a path"
    host, sep, port = target.rpartition(":")
    if not sep or port != "443":
        return "port 443 only"
    if host.startswith("["):
        return "an IP address"
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    try:
        ipaddress.ip_address(name)
        return "an IP address"
    except ValueError:
        pass
    if not _NAME.match(name) or name.rsplit(".", 1)[-1].isdigit() or name.rsplit(".", 1)[-1].startswith("0x"):
        return "not a host name"
    return name, 443


def parse_connect_to(spec: str) -> tuple[str, tuple[str, int]]:
    """`HOST:443:ADDR:PORT` (curl's --connect-to): connections for HOST go to ADDR:PORT instead."""
    m = re.fullmatch(r"([^:\s]+):443:(\[[0-9a-fA-F:.]+\]|[^:\s\[\]]+):(\d{1,5})", spec.strip())
    if not m or not 0 < int(m.group(3)) < 65536:
        raise UsageError(
            f"--connect-to {spec!r}: give HOST:443:ADDR:PORT (for example quantum.cloud.ibm.com:443:127.0.0.1:8443)"
        )
    got = normalise(f"{m.group(1)}:443")
    if isinstance(got, str):
        raise UsageError(f"--connect-to {spec!r}: {m.group(1)!r} is {got}; give a host name")
    return got[0], (m.group(2).strip("[]"), int(m.group(3)))


@dataclass(frozen=True)
class Egress:
    """Where a run's sandbox may go: the allowlist, and where some names are sent instead."""

    allow: frozenset[str]
    connect_to: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    @staticmethod
    def environment() -> tuple[tuple[str, str], ...]:
        """The sandbox's variables: its clients use the entry point's proxy, for loopback excepted."""
        url = f"http://127.0.0.1:{RELAY_PORT}"
        return (
            ("QSANDBOX_RELAY", "1"),
            *((name, url) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")),
            ("NO_PROXY", "localhost,127.0.0.1"),
            ("no_proxy", "localhost,127.0.0.1"),
        )


def _upstream(host: str) -> tuple[str, int, str | None] | None:
    """The launcher's own HTTPS proxy for `host` (its environment's HTTPS_PROXY, NO_PROXY), if any:
    (proxy host, port, Proxy-Authorization value or None)."""
    url = urllib.request.getproxies_environment().get("https")
    if not url or urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]  # not in typeshed
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    auth = None
    if parts.username is not None:
        creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(creds).decode()
    return parts.hostname, parts.port or 80, auth


def connect(host: str, egress: Egress) -> socket.socket:
    """A connection to host:443 from this machine: through --connect-to, the launcher's proxy, or direct."""
    if host in egress.connect_to:
        return socket.create_connection(egress.connect_to[host], timeout=CONNECT_TIMEOUT)
    via = _upstream(host)
    if via is None:
        sock = socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT)
    else:
        sock = socket.create_connection(via[:2], timeout=CONNECT_TIMEOUT)
        try:
            auth = f"Proxy-Authorization: {via[2]}\r\n" if via[2] else ""
            sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n{auth}\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(4096)
                if not data or len(head) > 16384:
                    raise OSError("the launcher's HTTPS proxy closed the connection")
                head += data
            line = head.split(b"\r\n", 1)[0]
            status = line.split(b" ")
            if len(status) < 2 or status[1] != b"200":
                raise OSError(f"the launcher's HTTPS proxy answered {shown(line.decode('latin-1'))}")
        except BaseException:
            sock.close()
            raise
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Tally:
    """Targets and how often each came: at most NAMED distinct ones kept (a script can make up names
    without end, and neither the launcher's memory nor the closing line may grow with them)."""

    def __init__(self) -> None:
        self.named: Counter[str] = Counter()
        self.more = 0

    def add(self, target: str) -> None:
        if len(target) > NAME_LENGTH:
            target = target[: NAME_LENGTH - 3] + "..."
        if target in self.named or len(self.named) < NAMED:
            self.named[target] += 1
        else:
            self.more += 1

    def listed(self) -> str:
        """ "host:port xN, ..., and N more"."""
        named = ", ".join(f"{t} x{n}" if n > 1 else t for t, n in sorted(self.named.items()))
        return named + (f", and {self.more} more" if self.more else "")


class Relay:
    """One sandbox's relay channels, as the stream's reader hands them over (never blocking it)."""

    def __init__(self, link: mux.Link, egress: Egress) -> None:
        self.channels = mux.Channels(link, opens_odd=False)
        self.egress = egress
        self._refused, self._failed = _Tally(), _Tally()
        self._lock = threading.Lock()

    def on_frame(self, f: mux.Frame) -> None:
        """A relay frame from the sandbox. ProtocolError if it broke the stream's rules."""
        if f.type != mux.Type.OPEN:
            self.channels.dispatch(f)
            return
        if not self.channels.peer_opens(f.channel):
            self.channels.refuse(f.channel, f"more than {mux.MAX_CHANNELS} connections at once")
            return
        target = f.payload.decode("ascii", "replace")
        got = normalise(target)
        if isinstance(got, str) or got[0] not in self.egress.allow:
            with self._lock:
                self._refused.add(target)
            why = got if isinstance(got, str) else "not on the allowlist"
            self.channels.refuse(f.channel, f"{target[:100]} refused: {why} (the launcher allows --allow-host names)")
            return
        threading.Thread(target=self._connect, args=(f.channel, got[0]), daemon=True).start()

    def _connect(self, ident: int, host: str) -> None:
        try:
            sock = connect(host, self.egress)
        except OSError as e:
            with self._lock:
                self._failed.add(f"{host}:443")
            with contextlib.suppress(OSError):
                self.channels.refuse(ident, f"{host}:443 unreachable from the launcher ({e.strerror or e})")
            return
        try:
            ch = self.channels.accepted(ident, sock)
        except OSError:
            ch = None
        if ch is None:
            sock.close()
            return
        ch.start()

    def close(self) -> None:
        self.channels.close_all()

    def summary(self) -> str:
        """What was refused, "host:port xN, ...", for the closing line (escape and mask it there)."""
        with self._lock:
            return self._refused.listed()

    def unreachable(self) -> str:
        """Allowed hosts this machine could not connect to, in the same form."""
        with self._lock:
            return self._failed.listed()
