"""`qsandbox sweep`: what a crashed or killed launcher left behind, and nothing a live one holds.

The engine is shared: another terminal's run, another user's on the same engine, a parallel CI job
all carry the same label. So by default only what no live launcher can be holding is taken, as
`docker container prune` does: a labelled container that exited (or died) or was never started,
and a labelled network with nothing on it, each older than a minute (a run creates its container
and starts it, or attaches its network, within a second or two). A run's network on a shared or
batch emulator still has that emulator on it after a killed run: the emulator does not count, as
long as no container of the network's own run is running. `everything` (`--all`) takes the rest
too (running sandboxes end their scripts); the shared emulator is `qsandbox platform down`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import docker
import docker.errors

from ..core.settings import LABEL
from ..engine import sandbox

MIN_AGE = 60.0  # seconds
DEAD_STATES = frozenset({"exited", "dead", "created"})  # created: never started


@dataclass(frozen=True)
class Candidate:
    kind: str  # "container" or "network"
    id: str
    name: str
    run: str
    state: str  # a container's state; a network's "unused" or "in use"
    live: bool  # may be in use by a live launcher: only --all takes it

    def line(self) -> str:
        return f"{self.kind} {self.name} (run {self.run})"


def _age(stamp: Any, now: float) -> float:
    """Seconds since the engine's RFC 3339 time (nanoseconds, Z or an offset); 0 if unreadable."""
    text = str(stamp or "")
    date, _, rest = text.partition(".")
    zone = "+00:00" if text.endswith("Z") else (rest[-6:] if rest[-6:-5] in "+-" else "+00:00")
    try:
        return now - datetime.fromisoformat(date + zone).timestamp()
    except ValueError:
        return 0.0


def container_is_stale(summary: dict[str, Any], now: float, min_age: float = MIN_AGE) -> bool:
    """A container from the engine's list (`docker ps -a`'s summary: State, Created in seconds)."""
    return str(summary.get("State", "")) in DEAD_STATES and now - float(summary.get("Created") or now) > min_age


def network_is_stale(attrs: dict[str, Any], running_runs: set[str], shared_ids: set[str], now: float) -> bool:
    """A network from its inspect data: older than MIN_AGE, no container on it but a shared
    emulator's, and no running container of its own run."""
    if _age(attrs.get("Created"), now) <= MIN_AGE:
        return False
    if (attrs.get("Labels") or {}).get(LABEL) in running_runs:
        return False
    attached = set((attrs.get("Containers") or {}).keys())
    return not (attached - shared_ids)


def select(client: docker.DockerClient, *, everything: bool = False, now: float | None = None) -> list[Candidate]:
    """What `sweep` removes: stale objects, and with `everything` the live ones too (marked live)."""
    now = time.time() if now is None else now
    found = []
    summaries = client.api.containers(all=True, filters={"label": LABEL})
    running_runs = {(c.get("Labels") or {}).get(LABEL, "") for c in summaries if c.get("State") not in DEAD_STATES}
    shared_ids = {str(c["Id"]) for c in summaries if sandbox.is_shared_platform(c.get("Labels"))}
    for c in summaries:
        labels = c.get("Labels") or {}
        if sandbox.is_shared_platform(labels):
            continue
        stale = container_is_stale(c, now)
        if stale or everything:
            name = (c.get("Names") or ["?"])[0].lstrip("/")
            found.append(
                Candidate("container", str(c["Id"]), name, labels.get(LABEL, "?"), str(c.get("State")), not stale)
            )
    for n in client.networks.list(filters={"label": LABEL}):
        try:
            n.reload()  # the list leaves out the containers on it
        except docker.errors.NotFound:
            continue
        attrs = n.attrs
        if sandbox.is_shared_platform(attrs.get("Labels")):
            continue
        stale = network_is_stale(attrs, running_runs, shared_ids, now)
        if stale or everything:
            state = "unused" if stale else "in use or new"
            run = (attrs.get("Labels") or {}).get(LABEL, "?")
            found.append(Candidate("network", str(n.id), str(n.name), run, state, not stale))
    return found


def remove(client: docker.DockerClient, found: list[Candidate]) -> list[str]:
    """Remove the candidates, containers first (a network goes once nothing is on it)."""
    removed = []
    for c in found:
        if c.kind == "container":
            sandbox.destroy(client, c.id)
            removed.append(c.line())
    for c in found:
        if c.kind != "network":
            continue
        try:
            net = client.networks.get(c.id)
            sandbox.disconnect_all(net)  # a run's network of the shared emulator: the emulator is still on it
            net.remove()
            removed.append(c.line())
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            continue  # something joined it meanwhile: in use after all
    return removed
