"""Connecting to the container engine, and telling which kind it is."""

from __future__ import annotations

import errno
import functools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from ...common.errors import EngineUnavailable

DEFAULT_SOCKET = "/var/run/docker.sock"  # the rootful engine's, where docker-py looks without DOCKER_HOST or a context
ROOTLESS_HINT = (
    'run your own rootless engine (README: "Rootless Docker for each user") '
    "and point DOCKER_HOST or `docker context use` at it"
)


SSH_CLIENT_ENV = "QSANDBOX_SSH_CLIENT"  # 0: reach ssh:// engines with paramiko, not the `ssh` command
_API_FLOOR = "1.24"  # docker-py's minimum; the engine's own version is asked for right after


def ssh_client_mode(environ: Mapping[str, str]) -> bool:
    """Whether ssh:// engines are reached with the system's `ssh` (its ~/.ssh/config, agent and
    ProxyJump, one ssh process per request), as the docker CLI does: the default. QSANDBOX_SSH_CLIENT=0
    uses paramiko inside the launcher instead (the optional extra `qsandbox[paramiko]`)."""
    return environ.get(SSH_CLIENT_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def connect(timeout: int = 120) -> docker.DockerClient:
    """Return a client for the engine named by DOCKER_HOST, the current docker context, or the default socket.

    Remote engines work as with the docker CLI: `tcp://` with DOCKER_TLS_VERIFY/DOCKER_CERT_PATH,
    and `ssh://` (the `ssh` command, or paramiko when QSANDBOX_SSH_CLIENT=0).
    Raises EngineUnavailable with the remedy when nothing answers or this user may not use it.
    """
    try:
        # The API version is asked for only once the TLS settings are pinned (see _pin_tls).
        client = docker.from_env(timeout=timeout, version=_API_FLOOR, use_ssh_client=ssh_client_mode(os.environ))
        _pin_tls(client.api)
        _one_ssh_pool(client.api)
        client.api._version = str(client.api.version(api_version=False)["ApiVersion"])  # type: ignore[attr-defined]  # docker-py's own negotiation, after the pin
        client.ping()
    except Exception as e:  # paramiko's and ssh's errors are not DockerExceptions: all mean no engine
        if not isinstance(e, docker.errors.DockerException | OSError | EOFError) and not _is_ssh_error(e):
            raise
        where, path = target(os.environ)
        raise EngineUnavailable(unreachable(where, path, denied=_denied(e, path), reason=_reason(e))) from e
    return client


def _pin_tls(api: docker.APIClient) -> None:
    """Keep the engine's CA (DOCKER_CERT_PATH/ca.pem, or no verification when asked) for every request.

    requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE in the environment replace a session's CA
    for each request (psf/requests#3829), so on a machine that sets them (a TLS-intercepting
    proxy's bundle, common on CI runners) a TLS engine's certificate would be checked against the
    wrong CAs and refused.
    """
    verify = api.verify
    if verify is True:  # no TLS settings: nothing to pin
        return
    merge = api.merge_environment_settings

    def pinned(*args: Any, **kwargs: Any) -> Any:
        settings = merge(*args, **kwargs)
        settings["verify"] = verify
        return settings

    api.merge_environment_settings = pinned  # type: ignore[method-assign]  # per instance, for this engine only


SSH_IDLE_CONNECTIONS = 2  # paramiko ssh channels kept open between requests (sshd allows 10 sessions)


def _one_ssh_pool(api: docker.APIClient) -> None:
    """Over ssh:// with paramiko, keep at most SSH_IDLE_CONNECTIONS idle channels open between requests.

    docker-py keeps one connection pool per request URL there (up to 9 of them, each holding its
    ssh session channel open on the one paramiko connection). With a run's long-lived streams
    (attach, the wait for removal) on top, that passes sshd's default MaxSessions of 10, and the
    server then refuses new requests ("open failed"). One pool for every URL keeps the count at
    the few requests in flight plus the streams. (With the ssh command every request is an ssh
    process of its own, read once and ended: nothing to change.)
    """
    try:
        from docker.transport.sshconn import SSHHTTPAdapter
    except ImportError:  # no paramiko: no ssh:// either
        return
    adapter = getattr(api, "_custom_adapter", None)
    if not isinstance(adapter, SSHHTTPAdapter) or adapter.ssh_client is None:
        return
    adapter.max_pool_size = SSH_IDLE_CONNECTIONS
    original = adapter.get_connection

    def one_pool(url: str, proxies: Any = None) -> Any:
        return original("http+docker://ssh", proxies)  # the adapter caches the pool under this one key

    adapter.get_connection = one_pool  # type: ignore[method-assign,assignment]  # per instance, for this engine only


def _is_ssh_error(e: BaseException) -> bool:
    """paramiko's own exceptions (authentication, host key, protocol), without importing it here."""
    return any(c.__module__.startswith("paramiko") for c in type(e).__mro__)


def _reason(e: BaseException) -> str | None:
    """The first line of what went wrong, for a remote engine (a local socket's failure says nothing more)."""
    text = str(e).strip()
    if "paramiko" in text.lower():
        return "QSANDBOX_SSH_CLIENT=0 needs paramiko: pip install 'qsandbox[paramiko]' (unset, the ssh command is used)"
    if _is_ssh_error(e) and "known_hosts" in text:
        return f"{text}: add the host's key to ~/.ssh/known_hosts (e.g. ssh to it once)"
    return text.splitlines()[0][:300] if text else type(e).__name__


def configured_host(environ: Mapping[str, str]) -> tuple[str, str | None] | None:
    """The engine's URL when DOCKER_HOST or a docker context names one, with the context's name;
    None for the default socket. The docker CLI's order: DOCKER_HOST, then the current context
    (DOCKER_CONTEXT, else `docker context use`'s choice in ~/.docker/config.json)."""
    if environ.get("DOCKER_HOST"):
        return environ["DOCKER_HOST"], None
    try:
        from docker.context import ContextAPI

        context = ContextAPI.get_context(environ.get("DOCKER_CONTEXT"))
    except Exception:  # noqa: BLE001 - an unreadable docker config or context: name the default socket
        return None
    if context is None or context.Name == "default" or not context.Host:
        return None
    return context.Host.replace("http+unix://", "unix://", 1), context.Name  # docker-py's spelling, not the user's


def target(environ: Mapping[str, str]) -> tuple[str, str | None]:
    """Where docker.from_env() connects: (words for a message, the unix socket path or None)."""
    configured = configured_host(environ)
    if configured is None:
        return f"the default socket {DEFAULT_SOCKET}", DEFAULT_SOCKET
    url, context = configured
    return (url if context is None else f"docker context {context} ({url})"), _unix_path(url)


def _unix_path(url: str) -> str | None:
    return url.removeprefix("unix://") or None if url.startswith("unix://") else None


def _denied(exc: BaseException, path: str | None) -> bool:
    """Whether connecting failed with EACCES/EPERM. The SDK buries the OSError in the args of a
    requests error inside the DockerException's cause, so causes, contexts and args are all searched."""
    if path is None:
        return False
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM):
            return True
        todo += [e.__cause__, e.__context__, *e.args]
    return False


def unreachable(where: str, path: str | None, *, denied: bool, reason: str | None = None) -> str:
    """The one line saying why no engine can be used, with what to do."""
    if denied and path is not None:
        try:
            os.stat(path)
            there = f"{where} exists but this user may not use it (permission denied)"
        except OSError:  # a directory on the way is closed to us: we cannot even see it
            there = f"this user may not reach {where} (permission denied)"
        return f"{there}: {ROOTLESS_HINT}"
    if path is None and reason:  # a remote engine: what failed on the way says more than a remedy
        return f"no container engine answers at {where}: {reason}"
    return (
        f"no container engine answers at {where}: start Docker (dockerd) or Podman "
        "(`podman system service`) and set DOCKER_HOST if it is not the default"
    )


def remote_url(environ: Mapping[str, str]) -> str | None:
    """The engine's URL when it is reached over the network (ssh://, tcp://, http(s)://), so it
    may run on another host; None for a unix socket (an engine on this machine)."""
    configured = configured_host(environ)
    if configured is None or configured[0].startswith(("unix://", "npipe://", "fd://")):
        return None
    return configured[0]


def tls_configured(environ: Mapping[str, str]) -> bool:
    """Whether a tcp:// engine is reached over TLS (docker-py's and the CLI's rule)."""
    return bool(environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"))


def answers(client: docker.DockerClient) -> bool:
    """Whether the engine answers a ping within 3 s (a hung engine does not count)."""
    api = client.api
    try:
        return api.get(api._url("/_ping"), timeout=3).status_code == 200  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any failure to answer is the answer
        return False


def went_away(client: docker.DockerClient, exc: BaseException) -> bool:
    """Whether `exc` means the engine is gone (restarting, crashed) rather than an answer from it.

    The SDK turns every HTTP answer into docker.errors.APIError, so a requests exception is always
    the connection failing. An engine shutting down still answers pings for a moment, so the
    exception's type decides first.
    """
    import requests.exceptions

    if isinstance(exc, requests.exceptions.RequestException | ConnectionError) or _is_ssh_error(exc):
        return True  # over ssh:// paramiko's own errors are the connection failing too
    return not answers(client)


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
    # dockerd's userns-remap: every container's uids are shifted into a subordinate range on the
    # host; remap_root is the host uid of the container's root there (None: not reported).
    userns_remap: bool = False
    remap_root: int | None = None
    ncpu: int = 0  # the CPUs the engine's host has (its info's NCPU; 0: not reported)

    @property
    def can_limit(self) -> bool:
        """Rootless engines get no cgroup delegation on cgroup v1: memory, pids and CPU limits are ignored."""
        return not (self.rootless and self.cgroup_version == "1")

    @property
    def own_userns(self) -> bool:
        """Whether the engine runs containers in a user namespace of its own (rootless, userns-remap),
        so a container's uid is not the same number on the host."""
        return self.rootless or self.userns_remap


def _podman_rootless(client: docker.DockerClient) -> bool:
    """Podman's Docker-compatible /info does not say; its own /libpod/info does."""
    api = client.api
    try:
        body = api.get(api._url("/libpod/info"), timeout=10).json()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an older Podman: assume the safer reading for access, rootful
        return False
    return bool((body.get("host") or {}).get("security", {}).get("rootless"))


@functools.lru_cache(maxsize=4)  # one engine per process; asked by preflight, run and helpers
def describe(client: docker.DockerClient) -> EngineInfo:
    """What kind of engine this is, from its version and info endpoints."""
    version = client.version()
    info = client.info()
    components = {c.get("Name", ""): c for c in version.get("Components") or []}
    security_options = info.get("SecurityOptions") or []
    security = " ".join(security_options)
    userns_remap = any("name=userns" in str(o).split(",") for o in security_options)
    is_podman = (
        any("podman" in name.lower() for name in components) or "podman" in str(info.get("OperatingSystem", "")).lower()
    )
    rootless = "rootless" in security or (is_podman and _podman_rootless(client))
    kind = ("rootless " if rootless else "") + ("Podman" if is_podman else "Docker")
    return EngineInfo(
        kind=kind,
        version=str(version.get("Version", "?")),
        api_version=str(client.api.api_version),
        rootless=rootless,
        log_driver=str(info.get("LoggingDriver", "?")),
        debug=bool(info.get("Debug", False)),
        podman=is_podman,
        cgroup_version=str(info.get("CgroupVersion") or "2"),
        userns_remap=userns_remap,
        remap_root=_remap_root(str(info.get("DockerRootDir") or "")) if userns_remap else None,
        ncpu=int(info.get("NCPU") or 0),
    )


def _remap_root(root_dir: str) -> int | None:
    """Under userns-remap dockerd keeps its state in <data-root>/<uid>.<gid>, named after the host
    uid and gid its containers' root maps to: the start of the remapped range."""
    uid, dot, gid = root_dir.rstrip("/").rpartition("/")[2].partition(".")
    return int(uid) if dot and uid.isdigit() and gid.isdigit() else None
