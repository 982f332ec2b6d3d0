"""Connecting to the container engine, and telling which kind it is."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import docker
import docker.errors

from ..common.errors import EngineUnavailable


def connect(timeout: int = 120) -> docker.DockerClient:
    """Return a client for the engine named by DOCKER_HOST (or the default socket).

    Raises EngineUnavailable with the remedy when nothing answers.
    """
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as e:
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        raise EngineUnavailable(
            f"no container engine answers at {where}: start Docker (dockerd) or Podman "
            "(`podman system service`) and set DOCKER_HOST if it is not the default"
        ) from e
    return client


def answers(client: docker.DockerClient) -> bool:
    """Whether the engine answers a ping within 3 s (a hung engine does not count)."""
    api = client.api
    try:
        return api.get(api._url("/_ping"), timeout=3).status_code == 200  # noqa: SLF001
    except Exception:  # noqa: BLE001 - any failure to answer is the answer
        return False


def went_away(client: docker.DockerClient, exc: BaseException) -> bool:
    """Whether `exc` means the engine is gone (restarting, crashed) rather than an answer from it.

    The SDK turns every HTTP answer into docker.errors.APIError, so a requests exception is always
    the connection failing. An engine shutting down still answers pings for a moment, so the
    exception's type decides first.
    """
    import requests.exceptions

    return isinstance(exc, requests.exceptions.RequestException | ConnectionError) or not answers(client)


def wait_back(client: docker.DockerClient, limit: float) -> bool:
    """After the engine went away mid-run: poll until it answers again, at most `limit` seconds."""
    end = time.monotonic() + limit
    while not answers(client):
        if time.monotonic() >= end:
            return False
        time.sleep(0.5)
    return True


@dataclass(frozen=True)
class EngineInfo:
    kind: str  # "Docker", "rootless Docker", "Podman" or "rootless Podman"
    version: str
    api_version: str
    rootless: bool
    log_driver: str
    debug: bool
    podman: bool = False
    cgroup_version: str = "2"

    @property
    def can_limit(self) -> bool:
        """Rootless engines get no cgroup delegation on cgroup v1: memory, pids and CPU limits are ignored."""
        return not (self.rootless and self.cgroup_version == "1")


def _podman_rootless(client: docker.DockerClient) -> bool:
    """Podman's Docker-compatible /info does not say; its own /libpod/info does."""
    api = client.api
    try:
        body = api.get(api._url("/libpod/info"), timeout=10).json()  # noqa: SLF001
    except Exception:  # noqa: BLE001 - an older Podman: assume the safer reading for access, rootful
        return False
    return bool((body.get("host") or {}).get("security", {}).get("rootless"))


@functools.lru_cache(maxsize=4)  # one engine per process; asked by preflight, run and helpers
def describe(client: docker.DockerClient) -> EngineInfo:
    """What kind of engine this is, from its version and info endpoints."""
    version = client.version()
    info = client.info()
    components = {c.get("Name", ""): c for c in version.get("Components") or []}
    security = " ".join(info.get("SecurityOptions") or [])
    is_podman = (
        any("podman" in name.lower() for name in components) or "podman" in str(info.get("OperatingSystem", "")).lower()
    )
    rootless = "rootless" in security or (is_podman and _podman_rootless(client))
    if is_podman:
        kind = "rootless Podman" if rootless else "Podman"
    else:
        kind = "rootless Docker" if rootless else "Docker"
    return EngineInfo(
        kind=kind,
        version=str(version.get("Version", "?")),
        api_version=str(client.api.api_version),
        rootless=rootless,
        log_driver=str(info.get("LoggingDriver", "?")),
        debug=bool(info.get("Debug", False)),
        podman=is_podman,
        cgroup_version=str(info.get("CgroupVersion") or "2"),
    )
