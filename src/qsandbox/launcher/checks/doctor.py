"""`qsandbox doctor`: one line per check, and the remedy when something required is missing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import docker

from ...common.errors import QsandboxError
from ..core.settings import IMAGE, Hardening, module_entrypoint
from ..engine import client as engine
from ..engine import image, preflight, sandbox

ENTRYPOINT = module_entrypoint("qsandbox.inside.entry")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    warn: bool = False  # not required, but weakens a guarantee
    checked: bool = True  # False: a check of a remote engine's host, which cannot be made from here

    @property
    def status(self) -> str:
        return "fail" if not self.ok else "warn" if self.warn else "ok" if self.checked else "not checked"

    def line(self) -> str:
        status = "FAIL" if not self.ok else "warn" if self.warn else "ok  " if self.checked else "n/a "
        return f"{status} {self.name}: {self.detail}"

    def as_dict(self) -> dict[str, object]:
        """For `doctor --json`: the line's parts, by name."""
        return {"name": self.name, "status": self.status, "detail": self.detail}


def probe(client: docker.DockerClient, hardening: Hardening, tag: str = IMAGE) -> dict[str, object]:
    """Start a container with the run's hardening and return what it reports from the inside."""
    out = sandbox.run_helper(client, tag, entrypoint=ENTRYPOINT, command=["probe"], stdin=b"", hardening=hardening)
    seen: dict[str, object] = json.loads(out)
    return seen


def _tmpfs_ok(info: dict[str, object], hardening: Hardening) -> list[str]:
    problems = []
    mount = info.get("mount") or {}
    if not isinstance(mount, dict) or mount.get("fstype") != "tmpfs":
        return ["not a tmpfs"]
    opts = set(mount.get("options", []))
    problems += [f"no {o}" for o in ("noexec", "nosuid", "nodev") if o not in opts]
    if info.get("mode") != "0o700":
        problems.append(f"mode {info.get('mode')}")
    if info.get("owner") != hardening.uid:
        problems.append(f"owner {info.get('owner')}")
    size = int(info.get("size") or 0)  # type: ignore[call-overload]
    if not 0 < size <= hardening.secret_size:
        problems.append(f"size {size} (wanted at most {hardening.secret_size})")
    if not info.get("writable"):
        problems.append("not writable")
    return problems


def checks(say: Callable[[Check], None]) -> bool:
    """Run every check in order, reporting each; later checks need the earlier ones."""
    try:
        client = engine.connect()
        info = engine.describe(client)
    except QsandboxError as e:
        say(Check("engine", False, str(e)))
        return False
    say(Check("engine", True, f"{info.kind} {info.version}, API {info.api_version}"))
    for f in preflight.findings(info):
        say(Check(f.name, True, f.warning or f.detail, warn=f.warning is not None, checked=f.checked))
    try:
        say(Check("image", True, image.check(client)))
    except QsandboxError as e:
        say(Check("image", False, str(e)))
        return False
    hardening = Hardening().for_engine(info)
    try:
        seen = probe(client, hardening)
    except QsandboxError as e:
        say(Check("probe", False, f"{e}: the engine cannot run a hardened sandbox"))
        return False
    except docker.errors.DockerException as e:
        say(Check("probe", False, f"probe container failed: {e}"))
        return False
    results = [
        Check("non-root", seen["uid"] == hardening.uid and seen["uid"] != 0, f"uid {seen['uid']}"),
        Check(
            "capabilities",
            seen["cap_eff"] == 0 and seen["cap_bnd"] == 0,
            f"effective {seen['cap_eff']:#x}, bounding {seen['cap_bnd']:#x}",
        ),
        Check("no-new-privileges", bool(seen["no_new_privs"]), f"NoNewPrivs={int(bool(seen['no_new_privs']))}"),
        Check(
            "read-only root",
            bool(seen["root_read_only"]),
            "writing / fails with EROFS" if seen["root_read_only"] else "/ is writable",
        ),
        Check("no core dumps", seen.get("core_limit") == [0, 0], f"RLIMIT_CORE {seen.get('core_limit')}"),
        Check(
            "resource limits",
            True,
            "memory (swap included), pids and CPU limits applied"
            if hardening.limits
            else f"{info.kind} on cgroup v1 cannot apply memory, pids or CPU limits; runs need "
            "--allow-no-limits (refused while host swap is on), or use cgroup v2 with the cpu, memory and "
            "pids controllers delegated to users",
            warn=not hardening.limits,
        ),
    ]
    for key, label in (("qiskit_dir", "account tmpfs"), ("secret_dir", "key tmpfs")):
        problems = _tmpfs_ok(seen[key], hardening)  # type: ignore[arg-type]
        detail = "tmpfs, noexec/nosuid/nodev, mode 0700, owned by the sandbox user, size capped"
        results.append(Check(label, not problems, detail if not problems else ", ".join(problems)))
    for r in results:
        say(r)
    return all(r.ok for r in results)
