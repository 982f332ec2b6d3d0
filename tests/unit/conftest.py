"""Fixtures of the unit tests that run a launcher against the fake engine (tests/fake_engine.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_engine import FakeEngine, engine_for


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeEngine]:
    """The fake engine in place of the real one (docker.from_env), the environment that would point
    elsewhere removed, and deps.record_use's state file in the test's own directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    with engine_for(monkeypatch) as engine:
        yield engine
