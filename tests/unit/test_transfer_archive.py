"""Files in and out over the stream: what is sent, what is left out, what comes back."""

from __future__ import annotations

import base64
import io
import os
import tarfile
from pathlib import Path

import pytest

from qsandbox.common.errors import UsageError
from qsandbox.common.handoff import OUTPUT_BEGIN, OUTPUT_END
from qsandbox.launcher.transfer import OutputReceiver, collect, extract


def names(archive: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [m.name for m in tar]


def project(tmp_path: Path) -> Path:
    (tmp_path / "bell.py").write_text("print('hi')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("1,2\n")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (tmp_path / ".env").write_text("TOKEN=1\n")
    (tmp_path / "notes.txt").write_text("n\n")
    return tmp_path


def test_only_the_script_by_default(tmp_path):
    d = project(tmp_path)
    inputs = collect(d / "bell.py", workdir=None, includes=(), limit=1 << 20)
    assert names(inputs.archive) == ["bell.py"]
    assert str(inputs.script) == "bell.py"


def test_workdir_sends_the_project_without_credential_stores_and_says_so(tmp_path):
    d = project(tmp_path)
    os.symlink(d / ".ssh" / "id_ed25519", d / "link")
    inputs = collect(d / "bell.py", workdir=d, includes=(), limit=1 << 20)
    assert names(inputs.archive) == ["bell.py", "data", "data/x.csv", "notes.txt"]
    left = " ".join(inputs.left_out)
    assert ".ssh (a credential store: to send it on purpose, --include .ssh)" in left
    assert ".env (a credential store" in left
    assert "link (a symbolic link: not followed)" in left
    assert b"PRIVATE KEY" not in inputs.archive


def test_include_keeps_the_relative_path_and_a_named_credential_file_is_sent_on_purpose(tmp_path):
    d = project(tmp_path)
    inputs = collect(d / "bell.py", workdir=None, includes=(Path("data"), Path(".env")), limit=1 << 20)
    assert names(inputs.archive) == [".env", "bell.py", "data", "data/x.csv"]


def test_refusals(tmp_path):
    d = project(tmp_path)
    with pytest.raises(UsageError, match="whole home directory or /"):
        collect(d / "bell.py", workdir=Path("/"), includes=(), limit=1 << 20)
    with pytest.raises(UsageError, match="outside"):
        collect(d / "bell.py", workdir=None, includes=(Path("/etc/hostname"),), limit=1 << 20)
    with pytest.raises(UsageError, match="over the --input-limit of 10"):
        collect(d / "bell.py", workdir=None, includes=(), limit=10)
    with pytest.raises(UsageError, match="not inside --workdir"):
        collect(d / "bell.py", workdir=d / "data", includes=(), limit=1 << 20)


def test_home_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    d = project(tmp_path)
    with pytest.raises(UsageError, match="whole home directory"):
        collect(d / "bell.py", workdir=d, includes=(), limit=1 << 20)


def test_find_the_key_in_an_input(tmp_path):
    d = project(tmp_path)
    (d / "data" / "cfg.txt").write_text("key = abcdefKEY123\n")
    inputs = collect(d / "bell.py", workdir=d, includes=(), limit=1 << 20)
    assert inputs.find("abcdefKEY123") == "data/cfg.txt"
    assert inputs.find("not-there") is None


def frame(marker: str, archive: bytes) -> bytes:
    return OUTPUT_BEGIN + marker.encode() + b"\n" + base64.encodebytes(archive) + OUTPUT_END + marker.encode() + b"\n"


def tar_of(*entries: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info in entries:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.size, i.mode, i.linkname = kind, size, mode, link
    return i


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_receiver_takes_the_frame_out_of_the_stream_in_any_chunking(tmp_path, chunk):
    archive = tar_of(info("result.txt", size=2), data=b"ok")
    stream = b"script says hi\x00 and more\n" + frame("m1", archive) + b"after\n"
    said: list[str] = []
    r = OutputReceiver("m1", tmp_path / "out", 1 << 20, said.append)
    passed = b"".join(r.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)) + r.flush()
    assert passed == b"script says hi\x00 and more\nafter\n"
    assert (tmp_path / "out" / "result.txt").read_bytes() == b"ok"
    assert r.delivered == ["result.txt"] and said == []


def test_hostile_entries_are_refused_and_named_and_the_rest_delivered(tmp_path):
    archive = tar_of(
        info("/abs.txt"),
        info("../up.txt"),
        info("link", tarfile.SYMTYPE, link="/etc/passwd"),
        info("inlink", tarfile.SYMTYPE, link="good.txt"),
        info("hard", tarfile.LNKTYPE, link="good.txt"),
        info("fifo", tarfile.FIFOTYPE),
        info("dev", tarfile.CHRTYPE),
        info("suid", mode=0o4755),
        info("good.txt"),
    )
    refused: list[str] = []
    got = extract(archive, tmp_path, 1 << 20, refused)
    assert sorted(got) == ["good.txt", "suid"]
    assert not (tmp_path / "suid").stat().st_mode & 0o6000  # setuid/setgid dropped
    text = " ".join(refused)
    for name in ("/abs.txt", "../up.txt", "link", "inlink", "hard", "fifo", "dev"):
        assert name in text
    assert not (tmp_path.parent / "up.txt").exists()


def test_output_over_the_limit_is_refused_entry_by_entry(tmp_path):
    archive = tar_of(info("a", size=6), info("b", size=6), data=b"123456")
    refused: list[str] = []
    assert extract(archive, tmp_path, 8, refused) == ["a"]
    assert "b (over the --output-limit of 8 bytes)" in refused[0]


def test_a_damaged_or_unfinished_frame_delivers_nothing_and_says_so(tmp_path):
    said: list[str] = []
    r = OutputReceiver("m", tmp_path, 1 << 20, said.append)
    r.feed(OUTPUT_BEGIN + b"m\nnot base64 !!!\n" + OUTPUT_END + b"m\n")
    assert r.delivered is None and "damaged" in said[0]
    r2 = OutputReceiver("m", tmp_path, 1 << 20, said.append)
    r2.feed(OUTPUT_BEGIN + b"m\nAAAA\n")
    r2.flush()
    assert "before its /output arrived whole" in said[1]


def test_a_link_already_in_the_output_dir_is_not_followed_out_of_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    refused: list[str] = []
    got = extract(tar_of(info("sub/x.txt", size=2), info("ok.txt", size=2), data=b"hi"), dest, 1 << 20, refused)
    assert got == ["ok.txt"]
    assert refused == [f"sub/x.txt (would land outside {dest})"]
    assert list(outside.iterdir()) == []
