"""The leak search's own logic, without an engine: forms, verdicts, and what a file walk reads."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from helpers import new_canary

from qsandbox.common.errors import UsageError
from qsandbox.launcher.checks.audit import LeakSearch, Place, audit, encodings, not_searched, planted_forms


class NoEngine:
    def info(self) -> dict[str, str]:
        raise AssertionError("not asked")


def _search(value: str, tmp_path: Path) -> LeakSearch:
    return LeakSearch(NoEngine(), value, project=tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", ["", "+/=", "é"])
def test_every_planted_form_holds_a_needle_and_another_key_none(suffix):
    value = new_canary() + suffix
    needles = encodings(value)
    for form, data in planted_forms(value).items():
        assert any(n in data for n in needles), form
    other = encodings(new_canary())
    assert not any(n in data for n in other for data in planted_forms(value).values())


def test_a_place_not_searched_never_reads_as_zero():
    place = Place("engine data root /var/lib/docker", "data-root", unreadable=["/var/lib/docker/ (Permission denied)"])
    assert place.failed
    assert place.line().startswith("NOT SEARCHED engine data root /var/lib/docker: could not read /var/lib/docker/")
    assert "0 hit(s) in engine data root" not in place.line()
    skipped = Place("journal", "journal", skipped="no journald running here")
    assert not skipped.failed and skipped.line() == "skipped journal: no journald running here"
    fine = Place("host /tmp", "host-tmp", searched=3)
    fine.left_out["file(s) unchanged since the search began"] += 7
    assert fine.line() == "0 hit(s) in host /tmp: 3 searched; left out: 7 file(s) unchanged since the search began"
    assert not_searched([place, skipped, fine]) == ["data-root"]
    assert not_searched([place, skipped, fine], accepted=["data-root"]) == []


def test_unknown_accepted_place_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown place"):
        audit(NoEngine(), ("success",), say=print, allow_unsearched=("nowhere",))  # type: ignore[arg-type]


def test_the_file_walk_reads_by_ctime_skips_fifos_and_does_not_follow_links(tmp_path):
    value = new_canary()
    search = _search(value, tmp_path)
    old = tmp_path / "old-mtime"
    old.write_bytes(planted_forms(value)["base64+2"])
    os.utime(old, (946684800, 946684800))  # its ctime is now: read
    os.mkfifo(tmp_path / "fifo")  # would block a reader: never opened
    outside = tmp_path.parent / f"outside-{secrets.token_hex(4)}"
    outside.write_bytes(value.encode())
    (tmp_path / "link").symlink_to(outside)  # the target is not in the place: not followed
    big = tmp_path / "big"
    big.write_bytes(b"." * (3 << 20) + planted_forms(value)["literal"])  # past any first-MiB cut
    try:
        place = Place("t", "project")
        search._files(place, tmp_path)
    finally:
        outside.unlink()
    assert sorted(place.hits) == sorted([str(old), str(big)])
    assert not place.failed


def test_an_absent_place_is_skipped_with_its_reason(tmp_path):
    search = _search(new_canary(), tmp_path)
    place = search._tree("host", "host-tmp", tmp_path / "absent")
    assert place.skipped == "not present on this host" and not place.failed


def test_a_place_that_missed_its_control_is_not_searched_and_a_found_one_says_so():
    place = Place("host /tmp", "host-tmp", searched=4, found={"/tmp/c/literal"})
    place.expect(["/tmp/c/literal", "/tmp/c/base64+1"])
    assert place.failed and place.planted == 2
    assert place.line() == (
        "NOT SEARCHED host /tmp: its own control was not found: /tmp/c/base64+1 (planted, not found); "
        "0 hit(s) in the 4 searched [--allow-unsearched host-tmp]"
    )
    fine = Place("host /tmp", "host-tmp", searched=4, found={"/tmp/c/literal"})
    fine.expect(["/tmp/c/literal"])
    assert not fine.failed and fine.line() == "0 hit(s) in host /tmp: 4 searched; control found (1 planted)"


def test_a_file_place_plants_its_control_finds_it_and_removes_it(tmp_path):
    search = _search(new_canary(), tmp_path)
    place = search._tree("project tree", "project", tmp_path)
    assert not place.failed and place.planted == len(planted_forms(search.control)) + 1, place.line()
    assert place.searched == 0 and list(tmp_path.iterdir()) == []  # the plant is gone, and not counted
    blind = _search(new_canary(), tmp_path)
    blind.control_needles = [b"\0nothing\0"]
    place = blind._tree("project tree", "project", tmp_path)
    assert place.failed and "its own control was not found" in place.line(), place.line()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["ssh://me@engine.example", "tcp://engine.example:2376"])
def test_a_remote_engine_from_docker_host_makes_its_hosts_places_not_searched(monkeypatch, tmp_path, url):
    monkeypatch.setenv("DOCKER_HOST", url)
    monkeypatch.setenv("HOME", str(tmp_path))  # a small home to walk
    search = _search(new_canary(), tmp_path)  # NoEngine: the data root is not even asked for
    assert search.remote == url
    for place in (search.data_root(), *search.engine_runtime()):
        assert place.failed and f"it is on the engine's host ({url}), not this machine" in place.line()
    (host,) = [p for p in search.host_dirs() if p.key == "engine-host"]
    assert host.line().startswith("NOT SEARCHED the engine's host: ")


def test_a_rootless_engines_runtime_dir_is_a_place(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/4242/docker.sock")
    search = _search(new_canary(), tmp_path)
    assert search.remote is None
    assert Path("/run/user/4242") in search.runtime_dirs()
    assert Path(f"/run/user/{os.getuid()}") in search.runtime_dirs()
