"""Inputs are opened, not re-resolved: a link or another file swapped in between the walk and the
read is refused and named (issue 31, finding 1), and host names are printed escaped (finding 2).

The swaps here are deterministic: `_pack` runs after the whole walk and before any read, so a
wrapper around it swaps at exactly the moment a racing account would hope to.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qsandbox.common.errors import UsageError
from qsandbox.launcher.run import transfer

SECRET = "SECRET-MARKER-outside-the-project"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A project (script, data file, a subdirectory) and, beside it, a file holding a secret."""
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "run.py").write_text("print(open('/work/zz_data.txt').read())\n")
    (proj / "zz_data.txt").write_text("honest\n")
    (proj / "sub" / "inner.txt").write_text("inner\n")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET + "\n")
    (outside / "sub" / "inner.txt").write_text(SECRET + "\n")
    return proj, outside


def swap_before_read(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> list[int]:
    """Run `swap` after the walk, just before the first read; returns a list that counts the calls."""
    calls: list[int] = []
    real = transfer._pack

    def pack(*args: Any) -> Any:
        calls.append(1)
        swap()
        return real(*args)

    monkeypatch.setattr(transfer, "_pack", pack)
    return calls


def to_link(path: Path, target: Path) -> None:
    tmp = path.with_name(path.name + ".swap")
    tmp.symlink_to(target)
    os.replace(tmp, path)


def test_a_file_swapped_for_a_link_after_the_walk_is_refused_and_named(layout, monkeypatch):
    proj, outside = layout
    calls = swap_before_read(monkeypatch, lambda: to_link(proj / "zz_data.txt", outside / "secret.txt"))
    with pytest.raises(UsageError) as caught:
        transfer.collect(proj / "run.py", workdir=proj, includes=(), limit=1 << 20)
    assert calls == [1]
    message = str(caught.value)
    assert message.startswith("the input zz_data.txt changed while the inputs were read (a symbolic link now")
    assert "refused, nothing was sent" in message and SECRET not in message


def test_the_walk_itself_still_leaves_a_link_out_and_says_so(layout):
    proj, outside = layout
    to_link(proj / "zz_data.txt", outside / "secret.txt")  # a link before the walk: left out, as always
    inputs = transfer.collect(proj / "run.py", workdir=proj, includes=(), limit=1 << 20)
    assert "zz_data.txt (a symbolic link: not followed)" in inputs.left_out
    assert SECRET.encode() not in b"".join(inputs.chunks(1 << 16))
    assert inputs.find("inner") == "sub/inner.txt"  # positive control: the archive is searchable


def test_another_regular_file_swapped_in_is_refused(layout, monkeypatch):
    proj, outside = layout

    def swap() -> None:
        os.link(outside / "secret.txt", proj / "other")  # a hard link: a regular file inside the project
        os.replace(proj / "other", proj / "zz_data.txt")

    swap_before_read(monkeypatch, swap)
    with pytest.raises(UsageError, match=r"the input zz_data.txt changed .*\(another file now\)"):
        transfer.collect(proj / "run.py", workdir=proj, includes=(), limit=1 << 20)


def test_a_directory_swapped_for_a_link_is_not_followed(layout, monkeypatch):
    proj, outside = layout

    def swap() -> None:
        os.rename(proj / "sub", proj / "sub.old")
        (proj / "sub").symlink_to(outside / "sub")

    swap_before_read(monkeypatch, swap)
    with pytest.raises(UsageError, match=r"the input sub/inner.txt changed .*sub is not a directory here") as caught:
        transfer.collect(proj / "run.py", workdir=proj, includes=(), limit=1 << 20)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("named", ["script", "include"])
def test_the_script_and_a_single_include_are_read_the_same_way(layout, monkeypatch, named):
    proj, outside = layout
    target = proj / ("run.py" if named == "script" else "zz_data.txt")
    swap_before_read(monkeypatch, lambda: to_link(target, outside / "secret.txt"))
    includes = (Path("zz_data.txt"),) if named == "include" else ()
    with pytest.raises(UsageError, match=rf"the input {target.name} changed .*a symbolic link now"):
        transfer.collect(proj / "run.py", workdir=None, includes=includes, limit=1 << 20)


def test_a_fifo_swapped_in_is_refused_without_blocking(layout, monkeypatch):
    proj, _ = layout

    def swap() -> None:
        os.mkfifo(proj / "fifo")
        os.replace(proj / "fifo", proj / "zz_data.txt")

    swap_before_read(monkeypatch, swap)
    got: list[BaseException] = []

    def collect() -> None:
        try:
            transfer.collect(proj / "run.py", workdir=proj, includes=(), limit=1 << 20)
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            got.append(e)

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # the open blocked on the FIFO: unblock it so the thread ends, then fail
        with open(proj / "zz_data.txt", "wb"):
            pass
        pytest.fail("collect blocked opening a FIFO swapped in for an input")
    assert len(got) == 1 and isinstance(got[0], UsageError), got
    assert "the input zz_data.txt changed while the inputs were read (not a regular file now)" in str(got[0])


def test_a_file_that_grows_past_the_limit_while_read_is_refused(layout, monkeypatch):
    proj, _ = layout
    swap_before_read(monkeypatch, lambda: (proj / "zz_data.txt").write_text("x" * 5000))
    with pytest.raises(UsageError, match="grew past the --input-limit of 2000 while they were read"):
        transfer.collect(proj / "run.py", workdir=proj, includes=(), limit=2000)


def test_host_names_are_shown_escaped(layout):
    proj, outside = layout
    evil = "evil\x1b]0;x\x07"
    (proj / evil).symlink_to(outside / "secret.txt")
    (proj / f"{evil}.env").mkdir()  # not a credential store's name: sent
    (proj / ".env.\x1b[2J").write_text("TOKEN=1\n")  # a credential store's name: left out, named
    inputs = transfer.collect(proj / "run.py", workdir=proj, includes=(), limit=1 << 20)
    notes = "\n".join(inputs.left_out)
    assert "evil\\x1b]0;x\\x07 (a symbolic link: not followed)" in notes
    assert ".env.\\x1b[2J (a credential store: to send it on purpose, --include .env.\\x1b[2J)" in notes
    assert "\x1b" not in notes and "\x07" not in notes
    with pytest.raises(UsageError) as caught:
        transfer.collect(proj / "run.py", workdir=None, includes=(Path(f"{evil}-missing"),), limit=1 << 20)
    assert str(caught.value) == "--include evil\\x1b]0;x\\x07-missing: no such file or directory"
