"""`--platform local`: the emulated IBM Quantum Platform on a per-run internal network.

The emulator runs from the sandbox image, with the same hardening, on a network created
`--internal` (no route out). It carries network aliases for the real host names the client
derives from https://cloud.ibm.com, so an unchanged script reaches it by those names; it serves
TLS with a CA it makes at start, and only that CA's certificate leaves it (printed to its stdout,
read over attach, handed to the sandbox with the key). The emulator never sees the key: only its
SHA-256 digest, so it accepts exactly that key.

A shared emulator (`platform up`, or one per batch) serves many sandboxes, and no sandbox may
reach another: each run gets an internal network of its own, and the emulator is connected to it
too, with its host names (`join`); the run removes it at its end. The emulator's own network holds
only the emulator and the launcher's helpers.

Like the sandbox, the emulator's attached stdin is a dead-man switch: it exits when the launcher
goes away, and the daemon removes it. A network cannot remove itself; every run first removes
labelled networks that no container of their own run uses any more (a killed run's network of a
shared emulator still has the emulator on it: it is taken off).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import docker
import docker.errors
from docker.models.networks import Network

from ...common.errors import PlatformNotRunning, SandboxError
from ...common.platform_constants import HOSTNAMES, INSTANCE_CRN
from ..core.credentials import Secret
from ..core.settings import LABEL, Hardening, module_entrypoint
from . import sandbox

READY_LINE = b"qsandbox-platform ready"
START_TIMEOUT = 60.0
CA_PATH = "/tmp/qsandbox-ca.pem"  # noqa: S108 - inside the emulator, on its tmpfs
EMULATOR_COMMAND = ["serve", "--port", "443", "--ca-out", CA_PATH, "--print-ca"]
SHARED = "qsandbox-platform"  # name of the long-lived emulator and of its network
SHARED_RUN_ID = sandbox.SHARED_PLATFORM_RUN  # its run label; sweep leaves it to `platform down`
ENTRYPOINT = module_entrypoint("qsandbox.platform")


def throwaway_key() -> Secret:
    """A key for rehearsals: random, shaped like an IBM Cloud API key (44 characters)."""
    return Secret(secrets.token_urlsafe(33), "a throwaway key made for this run")


def digest(secret: Secret) -> str:
    return hashlib.sha256(secret.reveal().encode()).hexdigest()


@dataclass
class LocalPlatform:
    network: str
    emulator_id: str
    ca_pem: str
    attachment: sandbox.Attachment | None  # None for the shared emulator: not ours to end
    instance: str = INSTANCE_CRN


STALE_AFTER = 30.0  # seconds: a run's network gets its first container within a second or two


def remove_stale_networks(client: docker.DockerClient) -> None:
    """Labelled networks with no running container of their own run: what a killed launcher could
    not remove. Another run's container on one (a shared or batch emulator) does not keep it: it is
    taken off first. A new one is left alone: another run may have just created it and not yet
    started its containers."""
    now = time.time()
    for net in client.networks.list(filters={"label": LABEL}):
        try:
            net.reload()
            created = _created(net.attrs.get("Created", ""))
            if created is None or now - created <= STALE_AFTER or _run_lives(client, net):
                continue
            sandbox.disconnect_all(net)
            net.remove()
        except docker.errors.APIError:
            pass  # in use by a run starting right now, or already gone


def _run_lives(client: docker.DockerClient, net: Network) -> bool:
    """Whether a container of the network's own run is running (on any engine, a labelled one)."""
    run_id = (net.attrs.get("Labels") or {}).get(LABEL)
    if not run_id:
        return bool(net.attrs.get("Containers"))
    return bool(client.api.containers(filters={"label": f"{LABEL}={run_id}"}))


def _created(stamp: str) -> float | None:
    """The engine's RFC 3339 time with nanoseconds, as seconds since the epoch."""
    try:
        date, _, rest = stamp.partition(".")
        zone = rest[rest.find("Z") :] if "Z" in rest else rest[-6:]
        return datetime.fromisoformat(date + (zone if zone != "Z" else "+00:00")).timestamp()
    except ValueError:
        return None


def create_network(client: docker.DockerClient, run_id: str) -> str:
    """The run's network: the emulator and the sandbox on it, nothing else reachable."""
    name = SHARED if run_id == SHARED_RUN_ID else f"qsandbox-{run_id}"
    # internal: no route out. inhibit_ipv4: the bridge gets no address on the host, so the host
    # itself (any service listening on 0.0.0.0) is not reachable through it either; an
    # internal network alone still routes to the host through its gateway address.
    client.networks.create(
        name,
        driver="bridge",
        internal=True,
        labels=sandbox.labels(run_id),
        options={"com.docker.network.bridge.inhibit_ipv4": "true"},
    )
    return name


def join(client: docker.DockerClient, platform: LocalPlatform, run_id: str) -> str:
    """A network of the run's own with `platform`'s emulator on it too, by the platform's host names:
    the run's sandbox reaches the emulator, and no other run's sandbox (each has a network of its own).
    `remove_network` takes the emulator off and removes it."""
    network = create_network(client, run_id)
    try:
        client.api.connect_container_to_network(platform.emulator_id, network, aliases=list(HOSTNAMES))
    except BaseException:
        remove_network(client, network)
        raise
    return network


def start(
    client: docker.DockerClient,
    image: str,
    run_id: str,
    key_digests: list[str],
    hardening: Hardening | None = None,
    token_ttl: int | None = None,
    queue_time: float | None = None,
) -> LocalPlatform:
    """Network and emulator; returns once it listens, with its CA certificate."""
    network = create_network(client, run_id)
    try:
        return start_emulator(client, image, run_id, network, key_digests, hardening, token_ttl, queue_time)
    except BaseException:
        remove_network(client, network)
        raise


def start_emulator(
    client: docker.DockerClient,
    image: str,
    run_id: str,
    network: str,
    key_digests: list[str],
    hardening: Hardening | None = None,
    token_ttl: int | None = None,
    queue_time: float | None = None,
) -> LocalPlatform:
    """The emulator on `network`; returns once it listens, with its CA certificate.

    A per-run emulator exits when this launcher goes away (stdin EOF); the shared one
    (run_id == SHARED_RUN_ID) lives until `qsandbox platform down`.
    """
    hardening = hardening or sandbox.hardening_for(client)
    shared = run_id == SHARED_RUN_ID
    command = EMULATOR_COMMAND if shared else [*EMULATOR_COMMAND, "--exit-on-stdin-eof"]
    service = sandbox.start_service(
        client,
        image,
        hardening,
        "the emulator",
        wait_removal=False,  # stopped by `stop` (a run's) or `platform down` (the shared one)
        entrypoint=ENTRYPOINT,
        command=command,
        name=SHARED if shared else f"qsandbox-{run_id}-platform",
        hostname="platform",
        labels=sandbox.labels(run_id),
        environment={
            "QSANDBOX_PLATFORM_KEY_SHA256": ",".join(key_digests),
            **({"QSANDBOX_PLATFORM_TOKEN_TTL": str(token_ttl)} if token_ttl else {}),
            **({"QSANDBOX_PLATFORM_QUEUE_TIME": str(queue_time)} if queue_time else {}),
        },
        network=network,
        networking_config={network: client.api.create_endpoint_config(aliases=list(HOSTNAMES))},
        # Docker 20.10 already defaults this to 0 in a container's own network namespace;
        # stated so the non-root emulator can bind 443 on every engine.
        sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
    )
    container_id, attachment = service.container_id, service.attachment
    try:
        ca_pem = _read_ca(attachment)
        if shared:
            attachment.close()  # the shared emulator outlives this command
    except BaseException:
        service.stop()
        raise
    return LocalPlatform(
        network=network, emulator_id=container_id, ca_pem=ca_pem, attachment=None if shared else attachment
    )


def _read_ca(attachment: sandbox.Attachment) -> str:
    """Collect stdout until the ready line; what came before it is the CA certificate (PEM)."""
    out = bytearray()
    errors = bytearray()
    done = threading.Event()

    def read() -> None:
        for stream, data in attachment.frames():
            (out if stream == 1 else errors).extend(data)
            if READY_LINE in out:
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(START_TIMEOUT) or READY_LINE not in out:
        tail = errors.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SandboxError(f"the emulated platform did not start: {tail[0]}")
    pem = bytes(out[: out.index(READY_LINE)]).decode()
    if "BEGIN CERTIFICATE" not in pem:
        raise SandboxError("the emulated platform printed no CA certificate")
    return pem.strip() + "\n"


def shared(client: docker.DockerClient) -> LocalPlatform:
    """The long-lived emulator started by `qsandbox platform up`, with its CA certificate."""
    try:
        container = client.containers.get(SHARED)
    except docker.errors.NotFound:
        raise PlatformNotRunning("no shared platform is running: start it with `qsandbox platform up`") from None
    # As the user it was made with (exec's default): root's sandbox uid depends on the host's accounts.
    code, out = container.exec_run(["cat", CA_PATH])
    if code != 0 or b"BEGIN CERTIFICATE" not in out:
        raise SandboxError("the shared platform has no CA certificate: restart it (`qsandbox platform down`, `up`)")
    emulator_id = cast(str, container.id)  # got from the engine: never None
    pem = cast(bytes, out).decode()  # stream=False: the whole output as bytes
    return LocalPlatform(network=SHARED, emulator_id=emulator_id, ca_pem=pem, attachment=None)


def up(
    client: docker.DockerClient, image: str, token_ttl: int | None = None, queue_time: float | None = None
) -> LocalPlatform:
    """Start the long-lived emulator (open mode: it accepts any well-formed key)."""
    try:
        return shared(client)
    except (PlatformNotRunning, SandboxError):  # none running, or one without its CA: start afresh
        pass
    for leftover in client.networks.list(names=[SHARED]):
        _remove_network(leftover)
    return start(client, image, SHARED_RUN_ID, [], token_ttl=token_ttl, queue_time=queue_time)


def down(client: docker.DockerClient) -> bool:
    """Stop the long-lived emulator and remove its network; False if none was running."""
    found = False
    try:
        sandbox.destroy(client, cast(str, client.containers.get(SHARED).id))  # got from the engine: never None
        found = True
    except docker.errors.NotFound:
        pass
    for net in client.networks.list(names=[SHARED]):
        _remove_network(net)
        found = True
    return found


def stop(client: docker.DockerClient, platform: LocalPlatform) -> None:
    """End a per-run emulator and its network (the shared one is left running)."""
    if platform.attachment is None:
        return
    platform.attachment.close()
    sandbox.destroy(client, platform.emulator_id)
    remove_network(client, platform.network)


def remove_network(client: docker.DockerClient, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        _remove_network(client.networks.get(name))


def _remove_network(network: Network) -> None:
    for _ in range(50):
        try:
            sandbox.disconnect_all(network)  # a shared or batch emulator joined to a run's network
            network.remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:  # endpoints still detaching after a removal
            threading.Event().wait(0.1)
    network.remove()
