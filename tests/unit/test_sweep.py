"""`qsandbox sweep`'s selection (launcher/checks/sweep.py): what no live launcher holds, and nothing else
unless --all; the shared emulator never. The engine's answers are canned; tests/docker/test_sweep.py
proves it on a real engine with a live run."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from click.testing import CliRunner

from qsandbox.launcher.checks import sweep
from qsandbox.launcher.cli import config
from qsandbox.launcher.cli.commands import main
from qsandbox.launcher.core.settings import LABEL
from qsandbox.launcher.engine import client as engine

NOW = time.time() - 1000  # the scene's clock, well apart from the real one


def stamp(age: float) -> str:
    return datetime.fromtimestamp(NOW - age, UTC).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")


def container(cid: str, run: str, state: str, age: float) -> dict[str, Any]:
    return {"Id": cid, "Names": [f"/qsandbox-{cid}"], "Labels": {LABEL: run}, "State": state, "Created": NOW - age}


class Net:
    def __init__(self, nid: str, run: str, age: float, attached: list[str]) -> None:
        self.id, self.name = nid, f"qsandbox-{nid}"
        self.attrs: dict[str, Any] = {
            "Labels": {LABEL: run},
            "Created": stamp(age),
            "Containers": {c: {} for c in attached},
        }
        self.removed = False

    def reload(self) -> None:
        pass

    def remove(self) -> None:
        self.removed = True

    def disconnect(self, container_id: str, force: bool = False) -> None:
        self.attrs["Containers"] = {c: v for c, v in self.attrs["Containers"].items() if c != container_id}


class Client:
    def __init__(self, containers: list[dict[str, Any]], networks: list[Net]) -> None:
        self._containers, self._networks = containers, networks
        self.removed: list[str] = []
        client = self

        class API:
            def containers(self, all: bool, filters: dict[str, str]) -> list[dict[str, Any]]:
                return client._containers

            def remove_container(self, cid: str, force: bool, v: bool) -> None:
                client.removed.append(cid)

        class Networks:
            def list(self, filters: dict[str, str]) -> list[Net]:
                return client._networks

            def get(self, nid: str) -> Net:
                return next(n for n in client._networks if n.id == nid)

        self.api, self.networks = API(), Networks()


def scene() -> Client:
    return Client(
        [
            container("live", "r1", "running", 3600),  # another terminal's run
            container("done", "r2", "exited", 120),
            container("fresh-exit", "r3", "exited", 10),  # exited, but too new to judge
            container("never", "r4", "created", 300),  # never started
            container("young", "r5", "created", 5),  # being started right now
            {**container("emu", "platform", "running", 9000)},  # the shared emulator
        ],
        [
            Net("n-live", "r1", 3600, ["live"]),  # the live run's network
            Net("n-old", "r6", 600, []),  # nothing on it
            Net("n-new", "r7", 10, []),  # just created by a run starting now
            Net("n-shared-left", "r8", 600, ["emu"]),  # a killed run's network on the shared emulator
            Net("n-shared-live", "r1", 600, ["emu"]),  # r1 still runs: its network stays
            Net("platform", "platform", 9000, ["emu"]),  # the shared emulator's own
        ],
    )


def names(found: list[sweep.Candidate]) -> list[str]:
    return [c.name for c in found]


def test_by_default_only_what_no_live_launcher_holds():
    found = sweep.select(scene(), now=NOW)  # type: ignore[arg-type]
    assert names(found) == [
        "qsandbox-done",
        "qsandbox-never",
        "qsandbox-n-old",
        "qsandbox-n-shared-left",
    ]
    assert not any(c.live for c in found)


def test_all_takes_the_rest_marked_live_but_never_the_shared_emulator():
    found = sweep.select(scene(), everything=True, now=NOW)  # type: ignore[arg-type]
    assert "qsandbox-emu" not in names(found) and "qsandbox-platform" not in names(found)
    live = {c.name for c in found if c.live}
    assert live == {"qsandbox-live", "qsandbox-fresh-exit", "qsandbox-young", "qsandbox-n-live", "qsandbox-n-new",
                    "qsandbox-n-shared-live"}  # fmt: skip


def test_remove_takes_the_emulator_off_a_network_first():
    client = scene()
    found = [c for c in sweep.select(client, now=NOW) if c.name == "qsandbox-n-shared-left"]  # type: ignore[arg-type]
    sweep.remove(client, found)  # type: ignore[arg-type]
    net = client.networks.get("n-shared-left")
    assert net.removed and net.attrs["Containers"] == {}


def run_sweep(monkeypatch, tmp_path, *args: str, input: str | None = None) -> Any:
    client = scene()
    monkeypatch.setattr(config, "SYSTEM_CONFIG", tmp_path / "none.toml")
    monkeypatch.setattr(engine, "connect", lambda timeout=120: client)
    monkeypatch.setattr(sweep, "time", type("Clock", (), {"time": staticmethod(lambda: NOW)}))  # the scene's now
    return client, CliRunner().invoke(main, ["sweep", *args], input=input)


def test_sweep_command(monkeypatch, tmp_path):
    client, r = run_sweep(monkeypatch, tmp_path, "--dry-run", "--all")
    assert r.exit_code == 0 and client.removed == [] and "would remove container qsandbox-live" in r.stdout
    client, r = run_sweep(monkeypatch, tmp_path)
    assert r.exit_code == 0 and sorted(client.removed) == ["done", "never"]
    assert r.stderr.strip() == "qsandbox: swept 4 object(s)"
    client, r = run_sweep(monkeypatch, tmp_path, "--all")  # no terminal, no --yes: refused, nothing removed
    assert r.exit_code == 2 and client.removed == []
    assert r.stderr.strip().splitlines()[-1].startswith("qsandbox: --all would remove 6 object(s) that may be in use")
    client, r = run_sweep(monkeypatch, tmp_path, "--all", "--yes")
    assert r.exit_code == 0 and "live" in client.removed and "emu" not in client.removed
