"""Shared fixtures: a random canary key per test, the engine, the image, and leak searches."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qsandbox.launcher.audit import LeakSearch, Place  # one search, shared with `qsandbox audit`
from qsandbox.launcher.audit import canary as new_canary

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart the engine go last: every other test keeps an undisturbed engine."""
    items.sort(key=lambda item: item.get_closest_marker("engine_restart") is not None)


@pytest.fixture
def canary() -> str:
    return new_canary()


def qsandbox(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "qsandbox", *args],
        input=input,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        if os.environ.get("CI"):
            raise
        pytest.skip("no Docker engine (run scripts/setup.sh)")
    return client


@pytest.fixture(scope="session")
def image(docker_client) -> Iterator[str]:
    """The image for this version: reused when present, built once per session otherwise.

    At the end of the session, no labelled container or network may remain on the engine; they
    are swept and the session fails. On an engine other people's runs share (a development
    machine: QSANDBOX_TESTS_SHARED_ENGINE=1) what is left may be theirs, still running: it is
    reported, never swept.
    """
    from qsandbox.common.errors import ImageError
    from qsandbox.launcher import image as image_mod
    from qsandbox.launcher.settings import IMAGE

    try:
        image_mod.check(docker_client)
    except ImageError:
        base = os.environ.get("QSANDBOX_BASE_IMAGE") or (
            "qsandbox-base:bookworm" if docker_client.images.list(name="qsandbox-base") else image_mod.DEFAULT_BASE
        )
        image_mod.build(docker_client, base=base, say=lambda _l: None)
    yield IMAGE
    from qsandbox.launcher import sandbox

    left = sandbox.leftovers(docker_client)
    if os.environ.get("QSANDBOX_TESTS_SHARED_ENGINE"):
        if left:
            print(f"\nlabelled objects left on this shared engine (perhaps other runs'): {left}", file=sys.__stderr__)
        return
    sandbox.sweep(docker_client)
    assert not left, f"tests left labelled objects behind: {left}"


@pytest.fixture
def leak_search(docker_client, canary) -> _Search:
    return _Search(LeakSearch(docker_client, canary, project=ROOT))


def problems(places: list[Place]) -> list[str]:
    """Every hit, and every place that could not be searched: both must be empty for a pass."""
    found = [f"{p.name}: {hit}" for p in places for hit in p.hits]
    return found + [f"NOT SEARCHED {p.name}: {', '.join(p.unreadable[:5])}" for p in places if p.failed]


class _Search:
    def __init__(self, search: LeakSearch) -> None:
        self.search = search

    def all_hits(self) -> list[str]:
        """After the run: hits, and places not searched (a place not searched is never a zero)."""
        return problems(self.search.all())

    def live_hits(self, marker: str, launcher: int | None = None) -> list[str]:
        """While the run holds the key: the live sandbox (its command holds `marker`), every
        container, the engine's events, every process's argv and environment, the launcher's."""
        return problems(self.search.live(marker, launcher))
