"""Frozen settings for one run, and the one place every hardening option is set and checked.

`Hardening.create_kwargs()` turns the spec into docker SDK keyword arguments;
`Hardening.mismatches()` reads the same options back from the engine's inspect data. The launcher
refuses to send the key into a container for which the second disagrees with the first.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import __version__
from ...common.errors import PreflightRefused, UsageError

# Re-exported (explicitly, `X as X`): the launcher names them from here.
from ...common.paths import CA_FILE as CA_FILE
from ...common.paths import HOME as HOME
from ...common.paths import OUTPUT_DIR as OUTPUT_DIR
from ...common.paths import QISKIT_DIR as QISKIT_DIR
from ...common.paths import SANDBOX_UID as SANDBOX_UID
from ...common.paths import SECRET_DIR as SECRET_DIR
from ...common.paths import TOKEN_FILE as TOKEN_FILE
from ...common.paths import TOKEN_SERVER_PORT as TOKEN_SERVER_PORT
from ...common.paths import VENV_PYTHON as VENV_PYTHON
from ...common.paths import WORKDIR as WORKDIR
from .units import parse_duration as parse_duration
from .units import parse_size as parse_size

if TYPE_CHECKING:
    from .needs import Needs

IMAGE_REPOSITORY = "qsandbox"
IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
LABEL = "qsandbox.run"  # every object qsandbox creates carries it, value = run id
VERSION_LABEL = "qsandbox.version"


def module_entrypoint(module: str) -> list[str]:
    """Entrypoint that runs one of qsandbox's in-image modules (entry, platform, broker)."""
    return [VENV_PYTHON, "-m", module]


def _tmpfs_opts(size: int, mode: str, owner: str | None) -> str:
    opts = f"rw,noexec,nosuid,nodev,size={size},mode={mode}"
    return f"{opts},{owner}" if owner else opts


# Podman speaks the Docker API in its own words; these are the differences its readback may show.
# With cap_drop ALL it lists its default set as dropped (the probe sees CapEff/CapBnd 0).
PODMAN_DEFAULT_CAPS = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
PODMAN_TMPFS_ADDED = frozenset({"rprivate", "tmpcopyup"})  # options it adds to every tmpfs
PODMAN_READ_ONLY_TMPFS = frozenset({"/run", "/var/tmp"})  # noqa: S108 - its --read-only-tmpfs (nosuid,nodev)


# Root's sandbox needs a uid nobody has. Without a user namespace a container's uid is the same
# number on the host, and a host account with that uid (and gid) reaches the sandbox's processes:
# /proc/<pid>/root/run/qsandbox/token, their environment, their memory. The image's 10001 is a
# common number for directory accounts, so root's sandbox gets a uid, used as its gid too, that no
# account or group has, asked through NSS (pwd/grp: /etc/passwd and /etc/group, LDAP, SSSD and
# winbind alike), and that is in no subordinate range (/etc/subuid, /etc/subgid: their owners'
# rootless containers run as those uids). The search starts at a fixed number and steps up one at a
# time, so a host gives the same uid run after run (a shared emulator started earlier still
# matches). The start is above the usual ranges: local accounts (below 60000), systemd's dynamic
# and container ranges (up to 1879048191), SSSD's default ID mapping (200000 to 2000200000);
# and below systemd's foreign range (from 2147352576) and 2**31, which some tools read as negative.
UNUSED_UID_BASE = 2_100_000_000
UNUSED_UID_TRIES = 10_000
SUBORDINATE_IDS = ("/etc/subuid", "/etc/subgid")


def uid_user(uid: int, *, subordinate: bool = True) -> str | None:
    """Who on this host has `uid` as a uid or gid ("user NAME", "group NAME", or a subordinate range
    of NAME); None when nobody has. `subordinate=False` asks only the passwd and group databases."""
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        pass
    try:
        return f"group {grp.getgrgid(uid).gr_name}"
    except KeyError:
        pass
    for path in SUBORDINATE_IDS if subordinate else ():
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            continue
        for line in lines:  # name:first:count
            name, _, rest = line.strip().partition(":")
            first, _, count = rest.partition(":")
            if first.isdigit() and count.isdigit() and int(first) <= uid < int(first) + int(count):
                return f"{name}'s subordinate ids ({path})"
    return None


def unused_uid() -> int:
    """The first uid from UNUSED_UID_BASE that no user, group or subordinate range has (see above)."""
    for uid in range(UNUSED_UID_BASE, UNUSED_UID_BASE + UNUSED_UID_TRIES):
        if uid_user(uid) is None:
            return uid
    raise PreflightRefused(
        f"every uid from {UNUSED_UID_BASE} to {UNUSED_UID_BASE + UNUSED_UID_TRIES - 1} belongs to a host "
        "account, group or subordinate range, so no sandbox uid is nobody's: run qsandbox as an ordinary user"
    )


def sandbox_uid(own_userns: bool = False) -> int:
    """The sandbox's uid (and gid); never root.

    An ordinary user's own uid: the sandbox's processes are theirs, which only they and root reach.
    Root's: on an engine that runs containers in a user namespace of its own (`own_userns`:
    rootless, or dockerd's userns-remap) the image's 10001, which the engine maps to one of its
    subordinate uids on the host (a uid beyond its mapped range could not run at all); on any
    other engine a uid nobody on the host has (unused_uid).
    """
    uid = os.getuid()
    if uid != 0:
        return uid
    return SANDBOX_UID if own_userns else unused_uid()


@dataclass(frozen=True, kw_only=True)
class Hardening:
    """Every isolation option of a sandbox container, in one place."""

    uid: int = field(default_factory=sandbox_uid)
    memory: int = 2 << 30  # numpy + Aer on a few qubits live well within this
    # None: every CPU the engine has (its info's NCPU, known once fitted: for_engine); never more.
    cpus: float | None = None
    pids: int = 1024  # Aer/OpenMP and BLAS threads count as pids, and so do the relay's (2 per channel)
    tmp_size: int = 256 << 20
    secret_size: int = 64 << 10  # an account file and a key: a few hundred bytes
    # /work holds the inputs streamed in (sized per run from them); /output what the script leaves
    # for --output. Both are tmpfs: nothing of the host is mounted.
    work_size: int = 1 << 20
    output_size: int = 256 << 20
    # What the engine can do (for_engine): Podman sets a tmpfs's owner with "U" (chown to the
    # container's user) instead of uid=/gid=; a rootless engine on cgroup v1 cannot apply limits.
    podman: bool = False
    rootless: bool = False
    limits: bool = True

    def for_engine(self, info: Any) -> Hardening:
        """This spec as the given engine (engine.EngineInfo) can carry it out."""
        from dataclasses import replace

        # Root's uid, chosen without the engine, becomes the image's in the engine's own user namespace.
        uid = sandbox_uid(own_userns=True) if info.own_userns and os.getuid() == 0 else self.uid
        ncpu = getattr(info, "ncpu", 0) or 0
        # An engine refuses a container with more CPUs than it has (an ssh:// engine smaller than this
        # machine): at most its count, by default all of it.
        cpus = (min(self.cpus, ncpu) if self.cpus else float(ncpu)) if ncpu else self.cpus
        return replace(self, uid=uid, cpus=cpus, podman=info.podman, rootless=info.rootless, limits=info.can_limit)

    @property
    def nano_cpus(self) -> int:
        """The CPU limit as the engine takes it; before for_engine, this machine's count stands in."""
        return int((self.cpus or os.cpu_count() or 1) * 1e9)

    def tmpfs(self) -> dict[str, str]:
        owner = "U" if self.podman else f"uid={self.uid},gid={self.uid}"
        return {
            "/tmp": _tmpfs_opts(self.tmp_size, "1777", None),  # noqa: S108 - the container's own /tmp
            str(QISKIT_DIR): _tmpfs_opts(self.secret_size, "0700", owner),
            str(SECRET_DIR): _tmpfs_opts(self.secret_size, "0700", owner),
            str(WORKDIR): _tmpfs_opts(self.work_size, "0700", owner),
            str(OUTPUT_DIR): _tmpfs_opts(self.output_size, "0700", owner),
        }

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `client.containers.create` that carry the hardening."""
        from docker.types import Ulimit

        return {
            "user": f"{self.uid}:{self.uid}",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "privileged": False,
            "tmpfs": self.tmpfs(),
            **(
                {
                    "mem_limit": self.memory,
                    "memswap_limit": self.memory,  # equal: the cgroup cannot swap, so tmpfs pages stay in RAM
                    "nano_cpus": self.nano_cpus,
                    "pids_limit": self.pids,
                }
                if self.limits
                else {}
            ),
            "ulimits": [Ulimit(name="core", soft=0, hard=0)],
            "log_config": {"type": "none", "config": {}},  # output goes over attach, never to disk
            "auto_remove": True,  # the daemon removes it, even if the launcher is killed
            # No docker-init: the entry point is PID 1 itself (it reaps and forwards), non-dumpable.
            # An init process would run as the sandbox's uid, dumpable, holding the attach stream's
            # stdin and stdout: the script could open them through /proc/1/fd, hold the dead-man
            # switch open and write into the launcher's stream (tests/docker/test_guards.py).
            "init": False,
            "ipc_mode": "private",
        }

    def mismatches(self, attrs: dict[str, Any]) -> list[str]:
        """Compare the engine's inspect data with this spec; return what differs."""
        host = attrs.get("HostConfig") or {}
        config = attrs.get("Config") or {}
        want = self.create_kwargs()
        dropped = _upper(host.get("CapDrop"))
        tmpfs = host.get("Tmpfs")
        ipc = host.get("IpcMode")
        core = _core(host.get("Ulimits"))
        if self.podman:  # read back in Podman's words (see PODMAN_*); each is equivalent, not weaker
            dropped = ["ALL"] if set(dropped) >= PODMAN_DEFAULT_CAPS else dropped
            tmpfs = _podman_tmpfs(tmpfs or {})
            ipc = "private" if ipc == "shareable" else ipc  # its own namespace either way
            core = (0, 0) if core is None else core  # not reported; the entry point sets it too, the probe checks
        checks: list[tuple[str, Any, Any]] = [
            ("user", config.get("User"), want["user"]),
            ("read-only root", host.get("ReadonlyRootfs"), True),
            ("privileged", bool(host.get("Privileged")), False),
            ("dropped capabilities", dropped, ["ALL"]),
            ("added capabilities", host.get("CapAdd") or [], []),
            ("no-new-privileges", _has_nnp(host.get("SecurityOpt")), True),
            ("tmpfs mounts", tmpfs, want["tmpfs"]),
            ("core ulimit", core, (0, 0)),
            ("log driver", (host.get("LogConfig") or {}).get("Type"), "none"),
            ("auto-remove", host.get("AutoRemove"), True),
            ("ipc mode", ipc, "private"),
            ("docker-init", bool(host.get("Init")), False),
        ]
        if self.limits:
            checks += [
                ("memory limit", host.get("Memory"), self.memory),
                ("memory+swap limit", host.get("MemorySwap"), self.memory),
                ("cpu limit", host.get("NanoCpus"), want["nano_cpus"]),
                ("pids limit", host.get("PidsLimit"), self.pids),
            ]
        return [f"{name}: engine has {got!r}, wanted {exp!r}" for name, got, exp in checks if got != exp]


def _podman_tmpfs(mounts: dict[str, str]) -> dict[str, str]:
    """Podman's tmpfs readback minus what it adds by itself: its read-only-tmpfs mounts (/run,
    /var/tmp: nosuid,nodev, empty) and its default options; anything else stays and mismatches."""
    out = {}
    for path, opts in mounts.items():
        given = opts.split(",")
        if path in PODMAN_READ_ONLY_TMPFS and {"nosuid", "nodev"} <= set(given):
            continue
        out[path] = ",".join(o for o in given if o not in PODMAN_TMPFS_ADDED)
    return out


def _upper(caps: list[str] | None) -> list[str]:
    return sorted(c.upper().removeprefix("CAP_") for c in caps or [])


def _has_nnp(opts: list[str] | None) -> bool:
    return any(o.replace("=", ":") in ("no-new-privileges", "no-new-privileges:true") for o in opts or [])


def _core(ulimits: list[dict[str, Any]] | None) -> tuple[int | None, int | None] | None:
    for u in ulimits or []:
        if u.get("Name") == "core":
            return (u.get("Soft"), u.get("Hard"))
    return None


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """One `qsandbox run`: what to run, where, with which non-secret account settings."""

    script: Path  # absolute path on the host
    args: tuple[str, ...] = ()
    channel: str = "ibm_quantum_platform"
    instance: str | None = None
    output: Path | None = None  # where /output is delivered when the script ends
    output_merge: bool = False  # --output DIR may hold files already (none is ever overwritten)
    output_keep_modes: bool = False  # delivered files keep their exec bits (never wider than 0755)
    raw_output: bool = False  # pass the script's terminal control sequences to a terminal unfiltered
    workdir: Path | None = None  # a project directory holding the script, sent whole (credential stores left out)
    includes: tuple[Path, ...] = ()  # more inputs, relative to the script's directory
    input_limit: int = 100 << 20
    # --platform ibm: "allowlist" (the default): the sandbox has no network, and the launcher's relay
    # lets it reach IBM's hosts and allow_hosts (launcher/run/relay.py, egress.py); "open" is the
    # engine's ordinary bridge.
    egress: str = "allowlist"
    allow_hosts: tuple[str, ...] = ()
    connect_to: tuple[str, ...] = ()  # "HOST:443:ADDR:PORT": the relay connects there for HOST (curl's --connect-to)
    ca_file: Path | None = None  # a CA bundle the sandbox trusts instead of the image's
    queue_time: float | None = None  # --platform local: jobs wait QUEUED/RUNNING this long, as on IBM
    timeout: float | None = None
    image: str = IMAGE
    needs: Needs | None = None  # the script's own dependencies (PEP 723 or --requirements): a derived image
    network: str | None = None  # None: the engine's default bridge (the real platform is online)
    hardening: Hardening = field(default_factory=Hardening)
    extra_env: tuple[tuple[str, str], ...] = ()
    cancel_on_abort: bool = True
    # "ibm": the real IBM Quantum Platform; "local": an emulated one for this run only;
    # "shared": the long-lived emulator from `qsandbox platform up`
    platform: str = "ibm"
    # Import Qiskit in the sandbox before the key arrives: pays off only while something else is
    # slower (the user typing the key, the emulator starting); otherwise pure overhead for a
    # script that does not import Qiskit itself.
    prewarm: bool = False
    redact: bool = True  # mask the key and IAM tokens in the script's output
    strict: bool = False  # refuse to run when a preflight check warns
    allow_no_limits: bool = False  # accept an engine that cannot apply memory/pids/CPU limits
    revoke_after: bool = False  # delete the API key through IAM Identity when the run ends
    # "api-key": the key goes into the sandbox's tmpfs. "short-lived": only an IAM access token
    # minted outside does; the client inside gets it from a local token endpoint.
    token_mode: str = "api-key"  # noqa: S105 - a mode name, not a secret
    # qsandbox lab (launcher/run/lab.py): `script` is the lab's directory (sent whole, as --workdir) and
    # the sandbox runs JupyterLab (`run -m qsandbox.inside.jupyter`) instead of a script.
    lab: bool = False

    def __post_init__(self) -> None:
        if not self.lab and not self.script.is_file():
            raise UsageError(f"script not found: {self.script}: give the path of a Python file")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError("--timeout must be a positive number of seconds")
        if self.token_mode not in ("api-key", "short-lived"):
            raise UsageError(f"unknown token mode {self.token_mode!r}: use api-key or short-lived")
        if self.egress not in ("allowlist", "open"):
            raise UsageError(f"unknown network mode {self.egress!r}: use allowlist or open")
        if self.platform not in ("ibm", "local", "shared"):
            raise UsageError(f"unknown platform {self.platform!r}: use ibm, local or shared")
        if self.channel not in ("ibm_quantum_platform", "ibm_cloud"):
            raise UsageError(f"unknown channel {self.channel!r}: use ibm_quantum_platform or ibm_cloud")

    @property
    def script_in_container(self) -> str:
        if self.lab:
            return "-m"  # args: the module (launcher/run/lab.py)
        base = (self.workdir or self.script.parent).resolve()
        return str(WORKDIR / self.script.resolve().relative_to(base).as_posix())

    def environment(self) -> dict[str, str]:
        """The container's environment: paths and non-secret settings, never the key."""
        env = {
            "HOME": str(HOME),
            "QISKIT_IBM_CHANNEL": self.channel,
            "QISKIT_IBM_TOKEN_FILE": str(TOKEN_FILE),  # the *_FILE convention for REST scripts
            "QSANDBOX_CANCEL_ON_ABORT": "1" if self.cancel_on_abort else "0",
            "QSANDBOX_PREWARM": "1" if self.prewarm else "0",
            "QSANDBOX_REDACT": "1" if self.redact else "0",  # the entry point masks IAM tokens the client obtains
        }
        if self.instance:
            env["QISKIT_IBM_INSTANCE"] = self.instance
        if self.token_mode == "short-lived":  # noqa: S105 - a mode name
            env["QSANDBOX_TOKEN_MODE"] = "short-lived"  # noqa: S105 - a mode name
            env["IAM_URL"] = f"http://127.0.0.1:{TOKEN_SERVER_PORT}"  # honoured for every IAM call
        env.update(dict(self.extra_env))
        return env
