"""Host and engine conditions under which the key could still end up on disk or in other hands.

Run by `qsandbox doctor` and, as warnings, before each `qsandbox run` (`--strict` refuses instead).
Each check is a plain function of what it reads, so it is tested with the inputs it meets.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from ..core.settings import Hardening, uid_user
from .client import EngineInfo, configured_host, remote_url, tls_configured


@dataclass(frozen=True)
class Finding:
    name: str
    warning: str | None  # None: fine, or not checked
    detail: str
    checked: bool = True  # False: a check of the engine's host, which this launcher cannot see

    @property
    def unchecked(self) -> str | None:
        """The line saying what was not checked, and why; None when it was checked."""
        return None if self.checked else f"{self.name}: {self.detail}"


def not_checked(name: str, url: str, what: str) -> Finding:
    """A check of the engine's host that cannot be made from here: said, never passed as fine."""
    return Finding(
        name, None, f"not checked: the engine runs on another host ({url}), where {what} cannot be seen", checked=False
    )


def on_other_system(name: str, system: str, what: str) -> Finding:
    """A check this launcher cannot make because it does not run on Linux."""
    return Finding(name, None, f"not checked: the launcher runs on {system}, not Linux, where {what} cannot be seen",
                   checked=False)  # fmt: skip


def swap(swaps_text: str, remote: bool = False) -> Finding:
    """Host swap: the launcher's memory (which holds the key) could be written to disk. On a local
    engine the sandbox's memory is this host's too; a remote engine's host is `engine host swap`."""
    where = " (this machine, where the launcher holds the key)" if remote else ""
    active = [line.split()[0] for line in swaps_text.splitlines()[1:] if line.strip()]
    if active:
        return Finding(
            "host swap",
            f"host swap is on{where} ({', '.join(active)}): the launcher's memory, "
            "key included, can be swapped to disk; turn swap off (swapoff -a) on shared machines",
            "on" + where,
        )
    return Finding("host swap", None, "off" + where)


def engine_logging(info: EngineInfo) -> Finding:
    """Debug mode has recorded API payloads; the per-container `none` driver is read back per run."""
    if info.debug:
        return Finding("engine debug", "the engine runs in debug mode, which logs API requests: turn it off", "on")
    return Finding("engine debug", None, f"off; default log driver {info.log_driver or 'unknown'}, runs use none")


def engine_access(info: EngineInfo, docker_host: str | None, uid: int, *, tls: bool = False) -> Finding:
    """Who else can reach this engine: a rootful engine's group members are root-equivalent.

    `docker_host` is the engine's URL (DOCKER_HOST or the docker context's), None for the default
    socket; `tls`: a tcp:// engine is reached with TLS (DOCKER_TLS_VERIFY/DOCKER_CERT_PATH).
    Over ssh:// or TLS only the engine's host knows who else can reach it: not checked, and said.
    A tcp:// engine without TLS answers anyone who can reach the port: a warning.
    """
    if info.rootless:
        return Finding("engine access", None, f"{info.kind}: only you can reach it")
    if docker_host and docker_host.startswith("ssh://"):
        return not_checked("engine access", docker_host, "who may use its socket")
    if docker_host and docker_host.startswith("tcp://") and tls:
        return not_checked("engine access", docker_host, "who else holds a client certificate or may use its socket")
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


def sandbox_account(info: EngineInfo, uid: int, remote: str | None, me: int) -> Finding:
    """Whether a host account shares the sandbox's uid. Outside a user namespace the container's uid
    is a host uid: an account with it reads a running key through /proc/<pid>/root of the sandbox's
    processes. `uid`: the sandbox's (settings.sandbox_uid), `remote`: a remote engine's URL, `me`:
    the launcher's uid."""
    name = "sandbox uid"
    if info.rootless:
        return Finding(name, None, f"uid {uid} inside {info.kind}'s user namespace, a uid of the engine's owner")
    if remote is not None:
        remap = " (shifted by its userns-remap)" if info.userns_remap else ""
        return not_checked(name, remote, f"which accounts have uid {uid}{remap}")
    if info.userns_remap:
        if info.remap_root is None:
            what = f"uid {uid} is shifted by the engine's userns-remap to a host uid it does not report"
            return Finding(name, None, f"not checked: {what}", checked=False)
        where = f"uid {uid}, host uid {info.remap_root + uid} under the engine's userns-remap"
        who = uid_user(info.remap_root + uid, subordinate=False)  # the subordinate range is the engine's own
        nobody = "no user or group on this host has it (NSS)"
    elif uid == me:
        return Finding(name, None, f"uid {uid}: yours, so only you and root reach the sandbox's processes")
    else:
        where, who = f"uid {uid} (no user namespace)", uid_user(uid)
        nobody = "no user, group or subordinate range on this host has it (NSS, /etc/subuid, /etc/subgid)"
    if who:
        return Finding(
            name,
            f"the sandbox's {where} is also {who}'s on this host: that account can read a running "
            "sandbox's key through /proc; remove the overlap, or use a rootless engine",
            where,
        )
    return Finding(name, None, f"{where}: {nobody}")


def engine_host_swap(url: str | None) -> Finding | None:
    """On a remote engine the key's tmpfs lives in another host's memory, whose swap is not ours to
    see; None for a local engine (the host swap check covers it)."""
    return None if url is None else not_checked("engine host swap", url, "swap")


def findings(
    info: EngineInfo, environ: Mapping[str, str] | None = None, uid: int | None = None, system: str | None = None
) -> list[Finding]:
    """Every preflight finding: this machine's (swap: the launcher holds the key), and the
    engine's; the checks of a remote engine's host, and those a launcher that is not Linux cannot
    make (`system`: sys.platform), come back as not checked, never as fine.
    `uid`: the sandbox's, by default the one a run on this engine gets."""
    env = os.environ if environ is None else environ
    system = sys.platform if system is None else system
    configured = configured_host(env)  # DOCKER_HOST or a docker context; None: the default socket
    host = configured[0] if configured else None
    remote = remote_url(env)
    if not system.startswith("linux"):
        # macOS or Windows (Docker Desktop): no /proc/swaps, and a local engine runs in a VM whose
        # socket permissions and accounts are not this machine's. Said, never passed as fine.
        found = [
            on_other_system("host swap", system, "this machine's swap"),
            engine_logging(info),
            on_other_system("engine access", system, "who else may use the engine"),
            on_other_system("sandbox uid", system, "which accounts share the sandbox's uid"),
        ]
    else:
        uid = Hardening().for_engine(info).uid if uid is None else uid
        try:
            with open("/proc/swaps", encoding="ascii") as f:
                swaps: Finding = swap(f.read(), remote is not None)
        except OSError as e:
            swaps = Finding("host swap", None, f"not checked: /proc/swaps cannot be read ({e.strerror})", checked=False)
        found = [
            swaps,
            engine_logging(info),
            engine_access(info, host, os.getuid(), tls=tls_configured(env)),
            sandbox_account(info, uid, remote, os.getuid()),
        ]
    engine_swap = engine_host_swap(remote)
    return found if engine_swap is None else [*found, engine_swap]
