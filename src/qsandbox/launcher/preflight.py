"""Host and engine conditions under which the key could still end up on disk or in other hands.

Run by `qsandbox doctor` and, as warnings, before each `qsandbox run` (`--strict` refuses instead).
Each check is a plain function of what it reads, so it is tested with the inputs it meets.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from urllib.parse import urlparse

from .engine import EngineInfo, configured_host


@dataclass(frozen=True)
class Finding:
    name: str
    warning: str | None  # None: fine
    detail: str


def swap(swaps_text: str) -> Finding:
    """Host swap: the launcher's memory (which holds the key) could be written to disk."""
    active = [line.split()[0] for line in swaps_text.splitlines()[1:] if line.strip()]
    if active:
        return Finding(
            "host swap",
            f"host swap is on ({', '.join(active)}): the launcher's memory, "
            "key included, can be swapped to disk; turn swap off (swapoff -a) on shared machines",
            "on",
        )
    return Finding("host swap", None, "off")


def engine_logging(info: EngineInfo) -> Finding:
    """Debug mode has recorded API payloads; the per-container `none` driver is read back per run."""
    if info.debug:
        return Finding("engine debug", "the engine runs in debug mode, which logs API requests: turn it off", "on")
    return Finding("engine debug", None, f"off; default log driver {info.log_driver or 'unknown'}, runs use none")


def engine_access(info: EngineInfo, docker_host: str | None, uid: int) -> Finding:
    """Who else can reach this engine: a rootful engine's group members are root-equivalent.

    `docker_host` is the engine's URL (DOCKER_HOST or the docker context's), None for the default socket.
    """
    if info.rootless:
        return Finding("engine access", None, f"{info.kind}: only you can reach it")
    path = (
        urlparse(docker_host).path
        if docker_host and docker_host.startswith("unix://")
        else ("/var/run/docker.sock" if not docker_host else None)
    )
    if path is None:
        return Finding(
            "engine access",
            "the engine is reached over the network: anyone who can reach it can "
            "read a running sandbox's key; use a local rootless engine",
            docker_host or "",
        )
    try:
        st = os.stat(path)
    except OSError:
        return Finding("engine access", None, f"{path} (not inspectable)")
    others: set[str] = set()
    try:
        group = grp.getgrgid(st.st_gid)
        others = set(group.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == st.st_gid}
        me = pwd.getpwuid(uid).pw_name
        others.discard(me)
        others.discard("root")
        gname = group.gr_name
    except KeyError:
        gname = str(st.st_gid)
    if st.st_mode & stat.S_IRWXO:
        return Finding(
            "engine access",
            f"{path} is open to every user: anyone here can read a running "
            "sandbox's key; fix its permissions or use rootless Podman/Docker",
            path,
        )
    if others and st.st_mode & stat.S_IRWXG:
        return Finding(
            "engine access",
            f"users {', '.join(sorted(others))} in group {gname} can reach the "
            "engine and read a running sandbox's key: on shared machines use rootless Docker or "
            "Podman per user",
            path,
        )
    return Finding("engine access", None, f"{path}: root and group {gname} (no other members)")


def findings(info: EngineInfo) -> list[Finding]:
    try:
        with open("/proc/swaps", encoding="ascii") as f:
            swaps_text = f.read()
    except OSError:
        swaps_text = ""
    configured = configured_host(os.environ)  # DOCKER_HOST or a docker context; None: the default socket
    host = configured[0] if configured else None
    return [swap(swaps_text), engine_logging(info), engine_access(info, host, os.getuid())]
