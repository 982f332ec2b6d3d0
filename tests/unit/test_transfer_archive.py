"""Files in and out over the stream: what is sent, what is left out, what comes back."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from qsandbox.common import mux
from qsandbox.common.errors import UsageError
from qsandbox.launcher.run import stream
from qsandbox.launcher.run.relay import Egress, Relay
from qsandbox.launcher.run.transfer import Inputs, OutputReceiver, check_output, collect, extract


def names(inputs: Inputs) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(sent(inputs))) as tar:
        return [m.name for m in tar]


def sent(inputs: Inputs) -> bytes:
    """What goes into the sandbox: the archive as it is streamed."""
    return b"".join(inputs.chunks(1 << 16))


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
    assert names(inputs) == ["bell.py"]
    assert str(inputs.script) == "bell.py"


def test_workdir_sends_the_project_without_credential_stores_and_says_so(tmp_path):
    d = project(tmp_path)
    os.symlink(d / ".ssh" / "id_ed25519", d / "link")
    inputs = collect(d / "bell.py", workdir=d, includes=(), limit=1 << 20)
    assert names(inputs) == ["bell.py", "data", "data/x.csv", "notes.txt"]
    left = " ".join(inputs.left_out)
    assert ".ssh (a credential store: to send it on purpose, --include .ssh)" in left
    assert ".env (a credential store" in left
    assert "link (a symbolic link: not followed)" in left
    assert b"PRIVATE KEY" not in sent(inputs)


def test_include_keeps_the_relative_path_and_a_named_credential_file_is_sent_on_purpose(tmp_path):
    d = project(tmp_path)
    inputs = collect(d / "bell.py", workdir=None, includes=(Path("data"), Path(".env")), limit=1 << 20)
    assert names(inputs) == [".env", "bell.py", "data", "data/x.csv"]


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


class FakeAttachment:
    """The engine's attach stream as `stream.pump` reads it: (1, bytes) pairs, cut every `chunk` bytes."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk, self.closed = data, chunk, False

    def frames(self):
        for i in range(0, len(self.data), self.chunk):
            if self.closed:
                return
            yield 1, self.data[i : i + self.chunk]

    def close(self) -> None:
        self.closed = True

    def send(self, data: bytes) -> None:
        pass


def output_frames(archive: bytes, *, end: bool = True) -> bytes:
    frames = [mux.frame(mux.Type.DATA, mux.OUTPUT, archive[i : i + 1000]) for i in range(0, len(archive), 1000)]
    return b"".join(frames) + (mux.frame(mux.Type.EOF, mux.OUTPUT) if end else b"")


def pump(data: bytes, receiver: OutputReceiver, chunk: int = 4096) -> tuple[bytes, FakeAttachment]:
    """What reaches the script's stdout through `stream.pump`, and the attachment."""
    att = FakeAttachment(data, chunk)
    printed: list[bytes] = []
    stream.pump(
        att,  # type: ignore[arg-type]  # the part of an Attachment pump uses
        output=lambda n, d: printed.append(d),
        relay=Relay(mux.Link(att.send), Egress(frozenset())),
        receiver=receiver,
        say=lambda s: None,
    )
    receiver.flush()
    return b"".join(printed), att


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
def test_receiver_takes_the_output_channel_out_of_the_stream_in_any_chunking(tmp_path, chunk):
    archive = tar_of(info("result.txt", size=2), data=b"ok")
    data = (
        mux.frame(mux.Type.DATA, mux.STDOUT, b"script says hi\x00 and more\n")
        + output_frames(archive)
        + mux.frame(mux.Type.DATA, mux.STDOUT, b"after\n")
    )
    said: list[str] = []
    r = OutputReceiver(tmp_path / "out", 1 << 20, said.append)
    passed, _ = pump(data, r, chunk)
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
    assert "b and the rest (over the --output-limit of 8 bytes)" in refused[0]


def test_a_damaged_or_unfinished_archive_is_said_and_nothing_of_it_printed(tmp_path):
    said: list[str] = []
    r = OutputReceiver(tmp_path, 1 << 20, said.append)
    passed, _ = pump(output_frames(b"not a tar archive at all" * 40), r)
    assert passed == b"" and r.delivered == [] and "not a plain tar archive" in said[0]
    r2 = OutputReceiver(tmp_path, 1 << 20, said.append)
    half = tar_of(info("a.txt", size=600), data=b"x" * 600)[:700]
    passed, _ = pump(output_frames(half, end=False), r2)
    assert passed == b""
    assert "the sandbox ended before it arrived" in said[-1]


def test_a_link_already_in_the_output_dir_is_not_followed_out_of_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    refused: list[str] = []
    got = extract(tar_of(info("sub/x.txt", size=2), info("ok.txt", size=2), data=b"hi"), dest, 1 << 20, refused)
    assert got == ["ok.txt"]
    assert refused == ["sub/x.txt (sub is not a directory here (a link or a file); not followed)"]
    assert list(outside.iterdir()) == []


def test_names_a_host_tool_would_run_or_read_are_refused_and_the_rest_delivered(tmp_path):
    archive = tar_of(
        info(".git/hooks/pre-commit", mode=0o755),
        info("sub/.git/config"),
        info(".bashrc"),
        info("sub/.env"),
        info("sub/.ssh/id_rsa"),
        info("sub/.hidden-is-fine-below-the-top"),
        info("result.txt"),
    )
    refused: list[str] = []
    got = extract(archive, tmp_path, 1 << 20, refused)
    assert sorted(got) == ["result.txt", "sub/.hidden-is-fine-below-the-top"]
    text = "\n".join(refused)
    assert ".git/hooks/pre-commit (under .git/: a repository's hooks would run it)" in text
    assert "sub/.git/config (under .git/" in text
    assert ".bashrc (a dotfile at the top" in text
    assert "sub/.env (a credential store's name)" in text and "sub/.ssh/id_rsa (a credential store's name)" in text
    assert not (tmp_path / ".git").exists() and not (tmp_path / ".bashrc").exists()


def test_modes_never_widen_and_exec_bits_come_back_only_when_asked(tmp_path, monkeypatch):
    os.umask(0o022)
    archive = tar_of(info("run.sh", mode=0o755), info("private", mode=0o600), info("shared", mode=0o666))
    a, b = tmp_path / "a", tmp_path / "b"
    extract(archive, a, 1 << 20, [])
    assert {p.name: p.stat().st_mode & 0o7777 for p in a.iterdir()} == {
        "run.sh": 0o644,
        "private": 0o600,
        "shared": 0o644,
    }
    extract(archive, b, 1 << 20, [], keep_modes=True)
    assert {p.name: p.stat().st_mode & 0o7777 for p in b.iterdir()} == {
        "run.sh": 0o755,
        "private": 0o600,
        "shared": 0o644,
    }


def test_an_existing_file_is_never_overwritten(tmp_path):
    (tmp_path / "result.txt").write_text("mine")
    refused: list[str] = []
    got = extract(tar_of(info("result.txt", size=2), info("new.txt", size=2), data=b"hi"), tmp_path, 1 << 20, refused)
    assert got == ["new.txt"] and refused == ["result.txt (already exists; not overwritten)"]
    assert (tmp_path / "result.txt").read_text() == "mine"


def test_a_compressed_archive_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(info("x.txt", size=2), io.BytesIO(b"hi"))
    refused: list[str] = []
    assert extract(buf.getvalue(), tmp_path, 1 << 20, refused) == []
    assert "not a plain tar archive" in refused[0]
    assert list(tmp_path.iterdir()) == []


def test_only_one_archive_is_taken_and_an_archive_never_prints_past_its_budget(tmp_path):
    said: list[str] = []
    first = tar_of(info("a.txt", size=2), data=b"hi")
    second = tar_of(info("b.txt", size=2), data=b"hi")
    r = OutputReceiver(tmp_path / "out", 1 << 20, said.append)
    passed, _ = pump(output_frames(first) + output_frames(second), r)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt"]
    assert passed == b""  # the second archive is dropped, never printed
    big = tar_of(info("big", size=1 << 20), data=b"x" * (1 << 20))
    r2 = OutputReceiver(tmp_path / "out2", 1000, said.append)
    passed, _ = pump(output_frames(big), r2)
    assert passed == b"" and list((tmp_path / "out2").iterdir()) == []
    assert any("big and the rest (over the --output-limit of 1000 bytes)" in line for line in said)


def test_check_output_wants_a_new_or_empty_directory_of_your_own(tmp_path, monkeypatch):
    check_output(tmp_path / "new" / "dir", merge=False)
    assert (tmp_path / "new" / "dir").is_dir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError, match=r"not empty; .*--output-merge"):
        check_output(tmp_path / "full", merge=False)
    check_output(tmp_path / "full", merge=True)
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)  # noqa: S103 - the unsafe directory under test
    with pytest.raises(UsageError, match="writable by group or others"):
        check_output(tmp_path / "open", merge=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for path in (tmp_path / "home", Path("/")):
        with pytest.raises(
            UsageError, match="refusing to deliver the sandbox's output into a whole home directory or /"
        ):
            check_output(path, merge=True)
    if os.geteuid() == 0:
        (tmp_path / "theirs").mkdir()
        os.chown(tmp_path / "theirs", 12345, 12345)
        with pytest.raises(UsageError, match="owned by uid 12345, not by you"):
            check_output(tmp_path / "theirs", merge=True)


def test_workdir_leaves_out_repositories_registry_tokens_cloud_credentials_and_private_keys(tmp_path):
    d = project(tmp_path)
    for rel in (".git/config", ".envrc", ".pypirc", ".npmrc", ".kube/config", ".config/gcloud/creds.json",
                ".azure/token", ".terraform.d/credentials.tfrc.json", ".cargo/credentials.toml", "id_rsa",
                "keys/id_ed25519.pub", "tls/server.pem", "tls/server.key", "cert.p12"):  # fmt: skip
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text("secret\n")
    (d / ".config" / "app.toml").write_text("kept\n")  # a sibling of gcloud: sent
    inputs = collect(d / "bell.py", workdir=d, includes=(), limit=1 << 20)
    assert names(inputs) == [".config", ".config/app.toml", "bell.py", "data", "data/x.csv", "notes.txt"]
    left = " ".join(inputs.left_out)
    for name in (".git", ".envrc", ".pypirc", ".npmrc", ".kube", ".config/gcloud", ".azure", ".terraform.d",
                 ".cargo/credentials.toml", "id_rsa", "keys/id_ed25519.pub", "tls/server.pem", "tls/server.key",
                 "cert.p12"):  # fmt: skip
        assert f"--include {name})" in left, name
    named = collect(d / "bell.py", workdir=d, includes=(Path("tls/server.pem"),), limit=1 << 20)
    assert "tls/server.pem" in names(named)  # named on purpose: sent
