"""Connecting to the container engine, and telling which kind it is."""

from __future__ import annotations

import os
from dataclasses import dataclass

import docker
import docker.errors

from .errors import EngineUnavailable


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


@dataclass(frozen=True)
class EngineInfo:
    kind: str  # "Docker", "rootless Docker" or "Podman"
    version: str
    api_version: str
    rootless: bool
    log_driver: str
    debug: bool


def describe(client: docker.DockerClient) -> EngineInfo:
    """What kind of engine this is, from its version and info endpoints."""
    version = client.version()
    info = client.info()
    components = {c.get("Name", ""): c for c in version.get("Components") or []}
    security = " ".join(info.get("SecurityOptions") or [])
    is_podman = any("podman" in name.lower() for name in components) or "podman" in str(
        info.get("OperatingSystem", "")
    ).lower()
    rootless = "rootless" in security or bool(info.get("host", {}).get("security", {}).get("rootless"))
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
    )
