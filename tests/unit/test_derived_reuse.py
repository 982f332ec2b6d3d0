"""A derived image is reused only as the image this user's qsandbox recorded building (issue 31,
finding 3): the decisions, on a fake engine. The real engine's version is in
tests/docker/test_script_deps.py."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from packaging.requirements import Requirement

from qsandbox import __version__
from qsandbox.launcher.core import needs as needs_mod
from qsandbox.launcher.core.settings import VERSION_LABEL, module_entrypoint
from qsandbox.launcher.engine import deps

BASE_CONFIG = {
    "Entrypoint": module_entrypoint(deps.ENTRY_MODULE),
    "Cmd": None,
    "User": "10001:10001",
    "Env": ["PATH=/opt/qsandbox/bin:/usr/bin"],
    "WorkingDir": "/work",
}


@dataclass
class FakeImage:
    id: str
    labels: dict[str, str]
    attrs: dict[str, Any] = field(default_factory=lambda: {"Config": dict(BASE_CONFIG)})


class FakeImages:
    def __init__(self) -> None:
        self.by_ref: dict[str, FakeImage] = {}

    def get(self, ref: str) -> FakeImage:
        try:
            return self.by_ref[ref]
        except KeyError:
            raise docker.errors.ImageNotFound(ref) from None


class FakeClient:
    def __init__(self) -> None:
        self.images = FakeImages()
        self.builds = 0


NEEDS = needs_mod.Needs((Requirement("tabulate>=0.9"),), None, "s.py (# /// script)")


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeClient, str]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    client = FakeClient()
    base = FakeImage("sha256:" + "b" * 64, {VERSION_LABEL: __version__})
    client.images.by_ref["qsandbox:test"] = client.images.by_ref[base.id] = base
    monkeypatch.setattr(deps, "read_pins", lambda _c, _b: deps.Pins("3.11.2", {}))
    tag = deps.derived_tag(base.id, NEEDS.normalized())

    def build(_client: Any, _say: Any, _context: bytes, *, tag: str, labels: dict[str, str], **_kw: Any) -> str:
        client.builds += 1
        built = FakeImage(f"sha256:{client.builds:064d}", {VERSION_LABEL: __version__, **labels})
        client.images.by_ref[tag] = client.images.by_ref[built.id] = built
        return built.id

    monkeypatch.setattr(deps.image, "stream_build", build)
    return client, tag


def test_built_recorded_then_reused_by_id(engine):
    client, tag = engine
    said: list[str] = []
    first = deps.ensure_image(client, "qsandbox:test", NEEDS, said.append)
    assert client.builds == 1 and first == client.images.get(tag).id and first.startswith("sha256:")
    again = deps.ensure_image(client, "qsandbox:test", NEEDS, said.append)
    assert again == first and client.builds == 1
    assert said[-1] == f"dependencies of s.py (# /// script): reusing {tag}"


def test_a_tag_qsandbox_has_no_record_of_is_built_again_and_named(engine):
    client, tag = engine
    client.images.by_ref[tag] = FakeImage(
        "sha256:" + "e" * 64,
        {
            VERSION_LABEL: __version__,
            deps.DERIVED_LABEL: "sha256:" + "b" * 64,
            deps.REQUIREMENTS_LABEL: "tabulate>=0.9",
        },
    )
    said: list[str] = []
    got = deps.ensure_image(client, "qsandbox:test", NEEDS, said.append)
    assert client.builds == 1 and got != "sha256:" + "e" * 64
    assert said[0] == (
        f"dependencies of s.py (# /// script): {tag} on this engine is not one qsandbox built for you "
        "(the tag names image eeeeeeeeeeee, and qsandbox has no record of building it): not used"
    )


def test_a_tag_moved_after_the_build_is_built_again_and_named(engine):
    client, tag = engine
    built = deps.ensure_image(client, "qsandbox:test", NEEDS, lambda _l: None)
    client.images.by_ref[tag] = FakeImage("sha256:" + "e" * 64, dict(client.images.get(built).labels))
    said: list[str] = []
    deps.ensure_image(client, "qsandbox:test", NEEDS, said.append)
    assert client.builds == 2
    assert f"(the tag now names image eeeeeeeeeeee, not {built[7:19]}, which qsandbox built): not used" in said[0]


def test_the_recorded_image_is_checked_too(engine):
    client, _tag = engine
    built = deps.ensure_image(client, "qsandbox:test", NEEDS, lambda _l: None)
    client.images.get(built).attrs["Config"]["Env"] = ["PYTHONSTARTUP=/x\x1b[2J"]
    said: list[str] = []
    deps.ensure_image(client, "qsandbox:test", NEEDS, said.append)
    assert client.builds == 2
    assert "(its Env is ['PYTHONSTARTUP=/x\\x1b[2J'], not the base image's" in said[0]  # repr's escape
    assert "\x1b" not in said[0]


def test_a_record_another_account_could_write_is_not_trusted(engine):
    client, tag = engine
    deps.ensure_image(client, "qsandbox:test", NEEDS, lambda _l: None)
    record = deps._records_file()
    assert record.stat().st_mode & 0o777 == 0o600 and record.parent.stat().st_mode & 0o022 == 0
    os.chmod(record, 0o666)  # noqa: S103 - the unsafe record under test
    said: list[str] = []
    deps.ensure_image(client, "qsandbox:test", NEEDS, said.append)
    assert client.builds == 2
    assert (
        "(the record of the images it built, " in said[0]
        and "(writable by group or others: mode 0666), is not" in said[0]
    )
    assert record.stat().st_mode & 0o777 == 0o600  # written afresh, the user's own
    deps.ensure_image(client, "qsandbox:test", NEEDS, said.append)
    assert client.builds == 2 and said[-1].endswith(f"reusing {tag}")


def test_prune_forgets_the_record(engine, monkeypatch):
    client, tag = engine
    deps.ensure_image(client, "qsandbox:test", NEEDS, lambda _l: None)
    assert tag in deps._read_records()[0]
    deps._forget_built(tag)
    assert deps._read_records() == ({}, "")
