"""Shared fixtures: a random canary key per test, the engine, the image, and leak searches; the
launchers a test starts, ended after it; and the tests that change the machine, which
`--no-machine-changes` skips on a workstation. Plain helpers (ROOT, qsandbox, error_lines, ...)
live in helpers.py: tests import them from there, never from conftest."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator

import pytest
from helpers import ROOT, end, new_canary, problems

from qsandbox.launcher.checks.audit import LeakSearch  # one search, shared with `qsandbox audit`

CI = bool(os.environ.get("CI"))
NO_CHANGES = "--no-machine-changes"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        NO_CHANGES,
        action="store_true",
        help="skip, each with its reason, the tests that change this machine as root (marker changes_machine: "
        "OS users, packages, /dev/net/tun, restarting dockerd); ignored under CI, where every test runs",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.getoption(NO_CHANGES) and CI:
        return f"{NO_CHANGES} ignored: CI is set, and CI runs the tests that change the machine too"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that restart the engine go last: every other test keeps an undisturbed engine.
    With --no-machine-changes (not under CI), the tests that change the machine are skipped."""
    items.sort(key=lambda item: item.get_closest_marker("engine_restart") is not None)
    if not config.getoption(NO_CHANGES) or CI:
        return
    for item in items:
        if marker := item.get_closest_marker("changes_machine"):
            item.add_marker(pytest.mark.skip(reason=f"{NO_CHANGES}: it {marker.args[0]}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI (.ci/run exports CI=1) every test runs: a skip, for whatever reason, fails. A skip
    is for a workstation that lacks what CI has (root, sshd, a rootful engine, ...); on CI it would
    be a claim left untested while the run reads green. (An xfail is not a skip.)"""
    report = yield
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        what = "the tests that change the machine" if item.get_closest_marker("changes_machine") else "every test"
        report.outcome = "failed"
        report.longrepr = f"CI must run {what}, and this one was skipped: {reason}"
    return report


@pytest.fixture
def canary() -> str:
    return new_canary()


@pytest.fixture
def popen() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """subprocess.Popen for a test: whatever the test's outcome, every process it started is ended
    after it and its pipes are closed (end()), so none outlives it or fails a later test."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: object, **kwargs: object) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = subprocess.Popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        end(proc)


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
    from qsandbox.launcher.core.settings import IMAGE
    from qsandbox.launcher.engine import image as image_mod

    try:
        image_mod.check(docker_client)
    except ImageError:
        base = os.environ.get("QSANDBOX_BASE_IMAGE") or (
            "qsandbox-base:bookworm" if docker_client.images.list(name="qsandbox-base") else image_mod.DEFAULT_BASE
        )
        image_mod.build(docker_client, base=base, say=lambda _l: None)
    yield IMAGE
    from qsandbox.launcher.engine import sandbox

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
