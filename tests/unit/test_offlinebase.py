"""`qsandbox build --offline-base`: reuse the base when present, else say what making it needs."""

from __future__ import annotations

import docker.errors
import pytest

from qsandbox.common.errors import ExitCode, UsageError
from qsandbox.launcher.engine import offlinebase


class Images:
    def __init__(self, present: bool) -> None:
        self.present = present

    def get(self, name: str) -> object:
        if not self.present:
            raise docker.errors.ImageNotFound(name)
        return object()


class Client:
    def __init__(self, present: bool) -> None:
        self.images = Images(present)


def test_present_base_is_reused_without_root_or_debootstrap(monkeypatch):
    monkeypatch.setattr(offlinebase.shutil, "which", lambda *a, **k: None)
    said: list[str] = []
    assert offlinebase.ensure(Client(True), say=said.append) == "qsandbox-base:bookworm"  # type: ignore[arg-type]
    assert said == ["offline base: qsandbox-base:bookworm already present"]


def test_missing_debootstrap_is_named(monkeypatch):
    monkeypatch.setattr(offlinebase.shutil, "which", lambda *a, **k: None)
    with pytest.raises(UsageError) as refused:
        offlinebase.ensure(Client(False), say=lambda _l: None)  # type: ignore[arg-type]
    assert str(refused.value) == "making the offline base needs debootstrap: `apt-get install debootstrap`, then re-run"
    assert refused.value.exit_code == ExitCode.USAGE


def test_not_root_is_told_to_run_it_once_as_root(monkeypatch):
    monkeypatch.setattr(offlinebase.shutil, "which", lambda *a, **k: "/usr/sbin/debootstrap")
    monkeypatch.setattr(offlinebase.os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError, match=r"needs root once \(debootstrap\): run `sudo qsandbox build --offline-base`"):
        offlinebase.ensure(Client(False), say=lambda _l: None)  # type: ignore[arg-type]
