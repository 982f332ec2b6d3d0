"""The sandbox container's lifecycle with the docker SDK: create, verify, attach, start, destroy, sweep.

All hardening comes from `settings.Hardening`; this module adds only what is specific to one run
(mounts, command, labels, network) and reads everything back from the engine before the key is
sent. Removal is the daemon's job (auto-remove), so a killed launcher cannot leave the container
behind; `destroy` is the fallback for every path where the container never got that far.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network

from ... import __version__
from ...common.errors import HardeningMismatch, ImageMissing, SandboxError
from ..core.settings import LABEL, VERSION_LABEL, WORKDIR, Hardening, RunSettings

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return secrets.token_hex(6)


def labels(run_id: str) -> dict[str, str]:
    return {LABEL: run_id, VERSION_LABEL: __version__}


def _expected_mounts(settings: RunSettings) -> dict[str, bool]:
    """Destination -> writable, for every mount that is not a tmpfs: none. Inputs and outputs
    travel over the attach stream (launcher.transfer), so nothing of the host is mounted."""
    return {}


def mismatches(settings: RunSettings, attrs: dict[str, Any]) -> list[str]:
    """Everything the engine reports that differs from what this run asked for."""
    found = settings.hardening.mismatches(attrs)
    mounts = {m.get("Destination"): bool(m.get("RW")) for m in attrs.get("Mounts") or []}
    if mounts != _expected_mounts(settings):
        found.append(f"mounts: engine has {mounts!r}, wanted {_expected_mounts(settings)!r}")
    network = (attrs.get("HostConfig") or {}).get("NetworkMode")
    joined = list(((attrs.get("NetworkSettings") or {}).get("Networks") or {}).keys())
    if settings.hardening.podman and network == "bridge":
        # Podman reports NetworkMode "bridge" for any bridge network; the one joined is listed here.
        network = joined[0] if len(joined) == 1 else f"bridge {joined}"
    if settings.network and network != settings.network:
        found.append(f"network: engine has {network!r}, wanted {settings.network!r}")
    config = attrs.get("Config") or {}
    if (config.get("Labels") or {}).get(LABEL) is None:
        found.append("run label missing")
    return found


def create_container(client: docker.DockerClient, image: str, hardening: Hardening, **kwargs: Any) -> Container:
    """`client.containers.create(image, **kwargs, **hardening.create_kwargs())`, plus what the SDK
    cannot say: on rootless Podman, UsernsMode keep-id, so the sandbox's uid (the invoking user's)
    is that user on the host too and the script's directory and --output keep working. The SDK
    accepts only "host" for userns_mode, so its own argument builder is used and then amended.
    """
    from docker.models.containers import _create_container_args  # type: ignore[attr-defined]  # private: not in types-docker

    args = _create_container_args(
        {
            "image": image,
            "version": client.api.api_version,  # the property returns APIClient._version
            **kwargs,
            **hardening.create_kwargs(),
        }
    )
    if hardening.podman and hardening.rootless:
        args["host_config"]["UsernsMode"] = "keep-id"
    created = client.api.create_container(**args)
    return client.containers.prepare_model({"Id": created["Id"]})  # no inspect: the caller reads back


def create(client: docker.DockerClient, settings: RunSettings, run_id: str) -> Container:
    """Create the sandbox container (not started) and verify its hardening from the engine."""
    try:
        container = create_container(
            client,
            settings.image,
            settings.hardening,
            command=["run", settings.script_in_container, *settings.args],
            name=f"qsandbox-{run_id}",
            hostname="qsandbox",
            labels=labels(run_id),
            environment=settings.environment(),
            working_dir=str(WORKDIR),
            network=settings.network,
            # stdin_open without detach makes the SDK set AttachStdin and StdinOnce: the stream
            # reaches EOF in the container when the attached launcher goes away.
            stdin_open=True,
        )
    except docker.errors.ImageNotFound as e:
        raise ImageMissing(f"image {settings.image} not found: run `qsandbox build`") from e
    except docker.errors.APIError as e:
        raise SandboxError(f"the engine refused to create the sandbox: {e.explanation}") from e
    container_id = cast(str, container.id)  # made from the engine's {"Id": ...}: never None
    try:
        attrs = client.api.inspect_container(container_id)
        wrong = mismatches(settings, attrs)
    except BaseException:
        destroy(client, container_id)
        raise
    if wrong:
        destroy(client, container_id)
        raise HardeningMismatch(
            "the engine did not apply the sandbox hardening, so no key was sent: " + "; ".join(wrong)
        )
    container.attrs = attrs  # as read back (the image's id among it)
    return container


@dataclass
class Attachment:
    """The attached stdin/stdout/stderr stream of one container.

    The same over every transport docker-py offers: a unix socket (SocketIO), TLS (an SSLSocket),
    ssh:// with paramiko (a Channel) or with the `ssh` command (docker-py's SSHSocket, pipes to an
    ssh process). Nothing here half-closes the stream: over ssh that fails, over TLS it ends the
    TLS session; the end of the hand-off is said in the protocol, and closing says the rest.
    """

    sock: Any  # what attach_socket returned (it owns the file descriptor, or the ssh process)
    raw: Any  # what sends and receives: the socket, SSLSocket, Channel or SSHSocket
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, data: bytes) -> None:
        with self._lock:  # heartbeat, token refresher and abort share the stream: whole lines only
            self.raw.sendall(data)

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """(stream, bytes) pairs, stream 1 = stdout, 2 = stderr, until the container exits.

        Blocking reads, no poll() first (docker-py's frames_iter polls the descriptor): a TLS
        socket can hold decrypted bytes that poll() does not see, which would hold a line back
        until the next one arrives.
        """
        while True:
            header = self._read_exactly(8)
            if header is None:
                return
            stream, size = struct.unpack(">BxxxL", header)
            while size > 0:
                data = self._recv(min(size, 1 << 16))
                if not data:
                    return
                size -= len(data)
                yield stream, data

    def _recv(self, n: int) -> bytes:
        reader = self.raw if hasattr(self.raw, "recv") else self.sock
        data = reader.recv(n) if hasattr(reader, "recv") else reader.read(n)
        return bytes(data or b"")

    def _read_exactly(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            data = self._recv(n - len(buf))
            if not data:
                return None
            buf += data
        return buf

    def close(self) -> None:
        # Both must close: the SocketIO wrapper keeps the descriptor open on its own.
        for closer in (self.raw.close, self.sock.close):
            with contextlib.suppress(OSError):
                closer()


def attach(client: docker.DockerClient, container_id: str) -> Attachment:
    sock = client.api.attach_socket(container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw = getattr(sock, "_sock", sock)  # SocketIO wraps the socket; docker-py exposes no getter
    for s in {id(sock): sock, id(raw): raw}.values():
        if hasattr(s, "settimeout"):
            s.settimeout(None)  # reads block without poll(): a quiet script must not time the stream out
    return Attachment(sock=sock, raw=raw)


class Removal:
    """Waits on the daemon for the container's removal, registered before the container starts.

    Uses the wait endpoint with condition=removed, as `docker run --rm` does. The daemon flushes
    the response headers once the wait is registered, so returning from the constructor (stream=True
    returns after the headers) guarantees no exit can be missed.
    """

    def __init__(self, client: docker.DockerClient, container_id: str) -> None:
        api = client.api
        # docker-py's wait() blocks until the end; this is the same request, split in two.
        self._resp = api._post(  # type: ignore[attr-defined]  # see the docstring; private: not in types-docker
            api._url("/containers/{0}/wait", container_id),  # type: ignore[attr-defined]
            params={"condition": "removed"},
            stream=True,
            timeout=None,
        )
        api._raise_for_status(self._resp)  # type: ignore[attr-defined]
        self.gone = False  # the engine answered the wait: the container is removed

    def exit_code(self) -> int:
        """Blocks until the container is gone; returns its exit code."""
        body = self._resp.json()
        if body.get("Error") and body["Error"].get("Message"):
            raise SandboxError(f"the engine reported: {body['Error']['Message']}")
        self.gone = True
        return int(body["StatusCode"])


def start(container: Container) -> None:
    """Start a created container (SandboxError if the engine cannot)."""
    try:
        container.start()
    except docker.errors.APIError as e:
        raise SandboxError(f"the engine could not start the sandbox: {e.explanation}") from e


def destroy(client: docker.DockerClient, container_id: str) -> None:
    """Force-remove; a container already gone (or being removed by the daemon) is fine."""
    try:
        client.api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as e:
        if e.status_code == 409:  # removal already in progress (auto-remove)
            return
        log.warning("could not remove container %s: %s", container_id[:12], e.explanation)


SHARED_PLATFORM_RUN = "platform"  # the long-lived emulator: `qsandbox platform down` ends it


def is_shared_platform(labels_: dict[str, str] | None) -> bool:
    """Objects of the shared emulator are not leftovers: `platform down` ends them, not `sweep`."""
    return (labels_ or {}).get(LABEL) == SHARED_PLATFORM_RUN


def leftovers(client: docker.DockerClient, run_id: str | None = None, *, networks: bool = True) -> list[str]:
    """Names of labelled objects the engine still has (for one run, or for all runs). `networks`:
    False for a run that never makes a network object (no network can carry its label)."""
    flt: dict[str, str | list[str] | bool] = {"label": f"{LABEL}={run_id}" if run_id else LABEL}
    # The low-level list: the SDK's containers.list() inspects each one and raises NotFound for a
    # container the daemon removes meanwhile, which is exactly when this is asked.
    found = [
        f"container {(c.get('Names') or ['?'])[0].lstrip('/')}"
        for c in client.api.containers(all=True, filters=flt)
        if run_id or not is_shared_platform(c.get("Labels"))
    ]
    found += [
        f"network {n.name}"
        for n in (client.networks.list(filters=flt) if networks or not run_id else [])
        if run_id or not is_shared_platform(n.attrs.get("Labels"))
    ]
    return found


def sweep(client: docker.DockerClient) -> list[str]:
    """Remove every object carrying the qsandbox label; return what was removed."""
    removed = []
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        if is_shared_platform(c.labels):
            continue
        destroy(client, cast(str, c.id))  # listed by the engine: never None
        removed.append(f"container {c.name} (run {c.labels.get(LABEL)})")
    for n in client.networks.list(filters={"label": LABEL}):
        if is_shared_platform(n.attrs.get("Labels")):
            continue
        try:
            disconnect_all(n)  # a run's network of the shared emulator: the emulator is still on it
            n.remove()
            removed.append(f"network {n.name} (run {n.attrs.get('Labels', {}).get(LABEL)})")
        except docker.errors.NotFound:
            pass
    return removed


def disconnect_all(network: Network) -> None:
    """Take every container still on `network` off it (on a run's network of a shared or batch
    emulator, the emulator stays connected after the run), so that the network can be removed."""
    try:
        network.reload()
    except docker.errors.NotFound:
        return
    for container_id in network.attrs.get("Containers") or {}:
        with contextlib.suppress(docker.errors.APIError):  # gone meanwhile, or already being disconnected
            network.disconnect(container_id, force=True)


def hardening_for(client: docker.DockerClient) -> Hardening:
    """The default hardening as this engine carries it out (helpers: probe, broker, emulator)."""
    from . import client as engine

    return Hardening().for_engine(engine.describe(client))


def verify(client: docker.DockerClient, container_id: str, hardening: Hardening, what: str) -> None:
    """Read a created container's hardening back from the engine; HardeningMismatch if it differs."""
    wrong = hardening.mismatches(client.api.inspect_container(container_id))
    if wrong:
        raise HardeningMismatch(f"the engine did not apply {what}'s hardening: " + "; ".join(wrong))


@dataclass
class Service:
    """A hardened helper container, started: the emulator, the key broker, the doctor's probe."""

    client: docker.DockerClient
    container_id: str
    attachment: Attachment
    removal: Removal | None  # the wait for its removal, when it is auto-removed

    def stop(self) -> None:
        """Close its stream (the dead-man switch ends it) and make sure it is gone."""
        self.attachment.close()
        destroy(self.client, self.container_id)


def network_kwargs(name: str) -> dict[str, Any]:
    """The create argument for a helper's network: a mode ("none", "bridge") or a network's name."""
    return {"network_mode": name} if name in ("none", "bridge") else {"network": name}


def start_service(
    client: docker.DockerClient,
    image: str,
    hardening: Hardening,
    what: str,
    *,
    wait_removal: bool = True,
    **create: Any,
) -> Service:
    """Create a helper container with the sandbox's hardening, read the hardening back from the
    engine (HardeningMismatch: destroyed, never started), attach and start it. The one lifecycle of
    every helper; on any failure the container is destroyed before the error goes on."""
    container = create_container(client, image, hardening, stdin_open=True, **create)
    container_id = cast(str, container.id)  # made from the engine's {"Id": ...}: never None
    try:
        verify(client, container_id, hardening, what)
        removal = Removal(client, container_id) if wait_removal else None
        att = attach(client, container_id)
        try:
            start(container)
        except BaseException:
            att.close()
            raise
    except BaseException:
        destroy(client, container_id)
        raise
    return Service(client, container_id, att, removal)


def run_helper(
    client: docker.DockerClient,
    image: str,
    *,
    entrypoint: list[str],
    command: list[str],
    stdin: bytes,
    hardening: Hardening,
    network: str = "none",
    environment: dict[str, str] | None = None,
) -> bytes:
    """Run a short-lived helper container with the sandbox hardening; return its stdout.

    The doctor's probe. Input goes over the attached stdin (never Env or Cmd), output comes back
    over attach (log driver none), and the daemon removes it.
    """
    service = start_service(
        client,
        image,
        hardening,
        "the helper",
        entrypoint=entrypoint,
        command=command,
        labels=labels(new_run_id()),
        environment=environment or {},
        **network_kwargs(network),
    )
    try:
        # No half-close after it: over ssh:// it fails (ENOTCONN) and over TLS it drops the TLS
        # session; the probe reads nothing.
        service.attachment.send(stdin)
        out = b"".join(data for stream, data in service.attachment.frames() if stream == 1)
        assert service.removal is not None  # asked for above
        service.removal.exit_code()
    finally:
        service.stop()
    return out
