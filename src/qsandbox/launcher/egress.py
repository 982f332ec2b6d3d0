"""The key can only go to IBM: a run's only way out is an allowlisting egress proxy.

With `--platform ibm` (and `--network allowlist`, the default) the sandbox joins a per-run network
created `--internal` (no route out, and no address on the host: see localplatform.create_network).
Its one way out is a proxy container on that network and on an ordinary one: Debian's tinyproxy
with a default-deny filter on the whole `host:port` of every CONNECT (inside/proxy.py), allowing
only the hosts qiskit-ibm-runtime 0.51 really contacts, all HTTPS on 443 (read from its source:
accounts/account.py, accounts/utils.py, api/auth.py, api/utils.py):

- `iam.cloud.ibm.com` (IAM tokens), `private.iam.cloud.ibm.com` (private endpoints);
- `api.global-search-tagging.cloud.ibm.com`, `globalcatalog.cloud.ibm.com` (instance lookup);
- the Runtime API of each region the client knows (`RegionType` in accounts/account.py: us-east,
  eu-de): `quantum.cloud.ibm.com` (us-east has no prefix), `eu-de.quantum.cloud.ibm.com`, and
  with private endpoints `private.us-east.quantum.cloud.ibm.com`,
  `private.eu-de.quantum.cloud.ibm.com`.

Every entry is one exact name: no wildcard. A pattern such as `[a-z0-9-]+.quantum.cloud.ibm.com`
let a script CONNECT to `<the key in hex>.quantum.cloud.ibm.com`; the filter passed it, tinyproxy
resolved it, and the query carried the key to whatever resolver the proxy's engine forwards to. A
refused CONNECT is never resolved (tinyproxy filters the request before it opens a connection), so
with exact names no name the script makes up leaves the machine. A region IBM adds later is
`--allow-host <region>.quantum.cloud.ibm.com` until the list here names it.

No object storage, no telemetry host. `--allow-host HOST` adds hosts (443 only). The sandbox gets
HTTPS_PROXY/HTTP_PROXY in both cases and NO_PROXY for its own loopback only. The sandbox itself
resolves nothing outside: the engine's embedded resolver answers the proxy's name on the internal
network, and a query for any other name has no route (tests/docker/test_egress.py shows both, and
that the proxy resolves only allowed names).
The proxy has the sandbox's hardening, is removed with the run, and ends itself when the launcher
dies (EOF on its stdin), like the sandbox.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import docker

from ..common.errors import SandboxError, UsageError
from . import sandbox
from .settings import Hardening, module_entrypoint

RUNTIME_REGIONS = ("us-east", "eu-de")
"""The Runtime API's regions, as the client knows them (`RegionType` in accounts/account.py)."""
HOSTS = (
    "iam.cloud.ibm.com",
    "private.iam.cloud.ibm.com",
    "api.global-search-tagging.cloud.ibm.com",
    "globalcatalog.cloud.ibm.com",
    *(("" if r == "us-east" else f"{r}.") + "quantum.cloud.ibm.com" for r in RUNTIME_REGIONS),
    *(f"private.{r}.quantum.cloud.ibm.com" for r in RUNTIME_REGIONS),
)
"""Every host the client contacts, by its exact name (api/utils.py, api/auth.py, accounts/utils.py)."""
PROXY_ALIAS = "qsandbox-egress"
PROXY_PORT = 8888
PROXY_URL = f"http://{PROXY_ALIAS}:{PROXY_PORT}"
ENTRYPOINT = module_entrypoint("qsandbox.inside.proxy")
READY = b"qsandbox-proxy: ready"
START_WAIT = 20.0
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")


def host_pattern(host: str) -> str:
    """An anchored pattern for one more allowed host (443 only); UsageError for anything else."""
    name = host.strip().lower()
    if not _HOST.match(name) or name.rsplit(".", 1)[-1].isdigit():  # no IP literals: names only
        raise UsageError(f"--allow-host {host!r}: give a host name such as api.example.org (no port, scheme or IP)")
    return _exact(name)


def _exact(name: str) -> str:
    # Names hold only [a-z0-9.-]: escaping the dots is exact in POSIX ERE (re.escape's `\-` is not ERE).
    return "^" + name.replace(".", r"\.") + ":443$"


ALLOWLIST = tuple(_exact(h) for h in HOSTS)


def proxy_environment() -> tuple[tuple[str, str], ...]:
    """Upper and lower case, none empty: an empty lowercase one would cancel the uppercase one."""
    env = []
    for name in ("HTTPS_PROXY", "HTTP_PROXY"):
        env += [(name, PROXY_URL), (name.lower(), PROXY_URL)]
    env += [("NO_PROXY", "127.0.0.1,localhost"), ("no_proxy", "127.0.0.1,localhost")]
    return tuple(env)


@dataclass
class Proxy:
    """One run's egress proxy container, and the refusals it reported."""

    container_id: str
    attachment: sandbox.Attachment
    refused: Counter[str] = field(default_factory=Counter)
    _reader: threading.Thread | None = None

    def stop(self, client: docker.DockerClient) -> None:
        self.attachment.close()  # EOF: the proxy exits, the daemon removes it
        sandbox.destroy(client, self.container_id)
        if self._reader is not None:
            self._reader.join(2.0)

    def summary(self) -> str:
        return ", ".join(f"{target} x{n}" for target, n in sorted(self.refused.items()))


def subnet(client: docker.DockerClient, network: str) -> str:
    config = (client.networks.get(network).attrs.get("IPAM") or {}).get("Config") or []
    if not config or not config[0].get("Subnet"):
        raise SandboxError(f"the engine gave network {network} no subnet; the egress proxy cannot be limited to it")
    return str(config[0]["Subnet"])


def start_proxy(
    client: docker.DockerClient,
    image: str,
    run_id: str,
    network: str,
    hardening: Hardening,
    patterns: tuple[str, ...],
    upstream: str = "bridge",
) -> Proxy:
    """The proxy on the run's `network` and on `upstream` (its way out); returns once it listens."""
    command = ["--client-subnet", subnet(client, network), "--port", str(PROXY_PORT)]
    for p in patterns:
        command += ["--allow", p]
    container = sandbox.create_container(
        client,
        image,
        hardening,
        entrypoint=ENTRYPOINT,
        command=command,
        name=f"qsandbox-{run_id}-egress",
        hostname="egress",
        labels=sandbox.labels(run_id),
        network=network,
        networking_config={network: client.api.create_endpoint_config(aliases=[PROXY_ALIAS])},
        stdin_open=True,
    )
    container_id = cast(str, container.id)  # made from the engine's {"Id": ...}: never None
    try:
        sandbox.verify(client, container_id, hardening, "the egress proxy")
        try:
            client.networks.get(upstream).connect(container_id)
        except docker.errors.NotFound:
            raise UsageError(f"--egress-network {upstream}: no such network on this engine") from None
        attachment = sandbox.attach(client, container_id)
        container.start()
        proxy = Proxy(container_id, attachment)
        ready = threading.Event()
        failed: list[str] = []
        proxy._reader = threading.Thread(target=_read, args=(proxy, ready, failed), daemon=True)
        proxy._reader.start()
        if not ready.wait(START_WAIT) or failed:
            raise SandboxError(f"the egress proxy did not start: {failed[0] if failed else 'no answer'}")
    except BaseException:
        sandbox.destroy(client, container_id)
        raise
    return proxy


def _read(proxy: Proxy, ready: threading.Event, failed: list[str]) -> None:
    """The proxy's stdout: the ready line, then one `refused HOST:PORT` line per refused request."""
    pending = b""
    try:
        for stream, data in proxy.attachment.frames():
            if stream == 2:
                failed.append(data.decode(errors="replace").strip()[-300:])
                ready.set()
                continue
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.startswith(READY):
                    ready.set()
                elif line.startswith(b"refused "):
                    proxy.refused[line[len(b"refused ") :].decode(errors="replace")[:300]] += 1
    except OSError:
        pass
    finally:
        if not ready.is_set():
            failed.append("it exited")
            ready.set()


@contextmanager
def session(
    client: docker.DockerClient,
    image: str,
    hardening: Hardening,
    allow_hosts: tuple[str, ...] = (),
    upstream: str = "bridge",
) -> Iterator[tuple[str, dict[str, str]]]:
    """A network and proxy for one helper call outside a run (`qsandbox revoke`): (network, env)."""
    from . import localplatform  # its network is the same kind: internal, no host address

    patterns = ALLOWLIST + tuple(host_pattern(h) for h in allow_hosts)
    run_id = sandbox.new_run_id()
    network = localplatform.create_network(client, run_id)
    try:
        proxy = start_proxy(client, image, run_id, network, hardening, patterns, upstream)
        try:
            yield network, dict(proxy_environment())
        finally:
            proxy.stop(client)
    finally:
        localplatform.remove_network(client, network)
