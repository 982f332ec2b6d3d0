"""Files in and out of the sandbox over the attach stream: nothing of the host is ever mounted.

In: the script, and only what the user names (`--include`, `--workdir`), packed here into a tar
archive in memory and sent after the start message; the entry point unpacks it into the /work
tmpfs. Credential stores inside a named directory are left out (and said so); an input holding
the key itself is refused before the key goes anywhere.

Out: after the script ends, the entry point sends the /output tmpfs back as a tar archive framed
on its stdout (see `common.handoff`); `OutputReceiver` takes it out of the stream and extracts it
into `--output DIR` entry by entry, refusing what could reach outside DIR or is not a plain file
or directory, and naming each refused entry.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..common.errors import UsageError
from ..common.handoff import OUTPUT_BEGIN, OUTPUT_END

# Never sent from inside a named directory; naming one with --include sends it on purpose.
CREDENTIAL_NAMES = frozenset({".ssh", ".gnupg", ".qiskit", ".aws", ".docker", ".netrc", ".git-credentials", ".env"})
PAGE = 4096


def is_credential_store(name: str) -> bool:
    return name in CREDENTIAL_NAMES or name.startswith(".env.")


@dataclass
class Inputs:
    """What enters the sandbox at /work: one archive, made once per run."""

    archive: bytes
    script: PurePosixPath  # the script's path relative to /work
    files: list[tuple[Path, str]] = field(default_factory=list)  # (host path, archive name)
    left_out: list[str] = field(default_factory=list)  # what was not sent, and why
    tmpfs_size: int = 0  # what /work needs: every file and directory rounded up to pages, plus room

    def find(self, needle: str) -> str | None:
        """The first input (its name in /work) whose content holds `needle`, or None."""
        data = needle.encode()
        with tarfile.open(fileobj=io.BytesIO(self.archive)) as tar:
            for member in tar:
                f = tar.extractfile(member) if member.isfile() else None
                if f is not None and data in f.read():
                    return member.name
        return None


def collect(script: Path, *, workdir: Path | None, includes: tuple[Path, ...], limit: int) -> Inputs:
    """Pack the script and the named inputs; UsageError (nothing started) for anything amiss."""
    script = script.resolve()
    base = (workdir or script.parent).resolve()
    if workdir is not None:
        _refuse_too_wide(base, "--workdir")
        if not base.is_dir():
            raise UsageError(f"--workdir {workdir}: not a directory")
        if base not in script.parents:
            raise UsageError(
                f"the script {script} is not inside --workdir {base}: give the project directory that holds it"
            )
    inputs = Inputs(archive=b"", script=PurePosixPath(script.relative_to(base).as_posix()))
    chosen: dict[str, Path] = {inputs.script.as_posix(): script}
    if workdir is not None:
        _add_tree(inputs, chosen, base, base)
    for named in includes:
        path = named if named.is_absolute() else script.parent / named
        if not path.exists() and not path.is_symlink():
            raise UsageError(f"--include {named}: no such file or directory")
        path = path.resolve()
        if path != base and base not in path.parents:
            raise UsageError(
                f"--include {named}: {path} is outside {base}; inputs keep their place relative to "
                "the script's directory: name a --workdir that holds both"
            )
        if path.is_dir():
            _refuse_too_wide(path, "--include")
            _add_tree(inputs, chosen, path, base)
        elif path.is_file():
            chosen[path.relative_to(base).as_posix()] = path  # named on purpose: sent whatever its name
        else:
            raise UsageError(f"--include {named}: not a regular file or directory")
    inputs.files = sorted(((p, name) for name, p in chosen.items()), key=lambda pn: pn[1])
    inputs.archive, inputs.tmpfs_size = _pack(inputs.files, limit)
    return inputs


def _add_tree(inputs: Inputs, chosen: dict[str, Path], top: Path, base: Path) -> None:
    for found, why in _walk(top, base):
        if why:
            inputs.left_out.append(f"{_rel(found, base)} ({why})")
        else:
            chosen.setdefault(_rel(found, base), found)


def _refuse_too_wide(path: Path, option: str) -> None:
    homes = {Path.home().resolve(), Path(os.path.expanduser("~")).resolve()}
    if path == Path("/") or path in homes:
        raise UsageError(
            f"{option} {path}: refusing to send a whole home directory or / into the sandbox; "
            "name the project directory or the files the script needs"
        )


def _walk(top: Path, base: Path) -> Iterator[tuple[Path, str]]:
    """Regular files under top, with a reason for everything left out (credential stores, links,
    special files). Symlinks are never followed: one could point at ~/.ssh."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        here = Path(dirpath)
        for d in sorted(dirnames):
            p = here / d
            if is_credential_store(d):
                dirnames.remove(d)
                yield p, f"a credential store: to send it on purpose, --include {_rel(p, base)}"
            elif p.is_symlink():
                dirnames.remove(d)
                yield p, "a symbolic link: not followed"
        for name in sorted(filenames):
            p = here / name
            if is_credential_store(name):
                yield p, f"a credential store: to send it on purpose, --include {_rel(p, base)}"
            elif p.is_symlink():
                yield p, "a symbolic link: not followed"
            elif not stat.S_ISREG(p.lstat().st_mode):
                yield p, "not a regular file"
            else:
                yield p, ""


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _pack(files: list[tuple[Path, str]], limit: int) -> tuple[bytes, int]:
    """A tar archive of the files (plain modes, no owners: the entry point sets its own), and the
    size of the tmpfs that holds them."""
    total = sum(p.stat().st_size for p, _ in files)
    if total > limit:
        raise UsageError(
            f"the inputs come to {total} bytes, over the --input-limit of {limit}: send less, or raise the limit"
        )
    buf = io.BytesIO()
    dirs: set[str] = set()
    tmpfs = 64 << 10  # room for the tmpfs's own bookkeeping and the entry point's directories
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, name in files:
            for parent in reversed(PurePosixPath(name).parents[:-1]):
                if str(parent) not in dirs:
                    dirs.add(str(parent))
                    tar.addfile(_info(str(parent), tarfile.DIRTYPE, 0, 0o755))
                    tmpfs += PAGE
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise UsageError(f"cannot read {path}: {e.strerror}") from None
            tar.addfile(_info(name, tarfile.REGTYPE, len(data), 0o644), io.BytesIO(data))
            tmpfs += (len(data) + PAGE - 1) // PAGE * PAGE + PAGE
    return buf.getvalue(), tmpfs


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, 0
    return info


class OutputReceiver:
    """Takes the /output archive out of the sandbox's stdout and extracts it into `dest`.

    `feed` returns the bytes that are the script's own output. Bytes that could be the start of the
    frame are held back until it is clear they are not (a NUL in a script's output, rarely).
    """

    def __init__(self, marker: str, dest: Path | None, limit: int, say: Callable[[str], None]) -> None:
        self.begin = OUTPUT_BEGIN + marker.encode() + b"\n"
        self.end = OUTPUT_END + marker.encode() + b"\n"
        self.dest, self.limit, self.say = dest, limit, say
        self._held = b""
        self._frame: bytearray | None = None  # inside the frame: the base64 text so far
        self.delivered: list[str] | None = None  # None until an archive arrived
        self.refused: list[str] = []

    def feed(self, data: bytes) -> bytes:
        data = self._held + data
        self._held = b""
        if self._frame is None:
            at = data.find(self.begin)
            if at < 0:
                keep = _partial_suffix(data, self.begin)
                self._held = data[len(data) - keep :] if keep else b""
                return data[: len(data) - keep]
            self._frame = bytearray()
            passed, data = data[:at], data[at + len(self.begin) :]
        else:
            passed = b""
        searched_to = max(0, len(self._frame) - len(self.end))  # the end marker may straddle chunks
        self._frame += data
        at = self._frame.find(self.end, searched_to)
        if at >= 0:
            text, rest = bytes(self._frame[:at]), bytes(self._frame[at + len(self.end) :])
            self._frame = bytearray()
            self._finish(text)
            self._frame = None
            return passed + rest
        if len(self._frame) > self.limit * 4 // 3 + (1 << 20):
            self._frame = None
            self.say("the sandbox sent more output than --output-limit allows; nothing delivered")
        return passed

    def flush(self) -> bytes:
        """At the end of the stream: what was held back is the script's after all."""
        held, self._held = self._held, b""
        if self._frame is not None:
            self._frame = None
            self.say("the sandbox ended before its /output arrived whole; nothing delivered")
        return held

    def _finish(self, text: bytes) -> None:
        try:
            archive = base64.b64decode(text.replace(b"\n", b""), validate=True)
        except (binascii.Error, ValueError):
            self.say("the /output archive arrived damaged; nothing delivered")
            return
        if self.dest is None:
            return
        self.delivered = extract(archive, self.dest, self.limit, self.refused)
        for entry in self.refused:
            self.say(f"refused from /output: {entry}")


def _partial_suffix(data: bytes, marker: bytes) -> int:
    """Length of the longest suffix of data that is a proper prefix of marker."""
    start = data.rfind(marker[:1], max(0, len(data) - len(marker) + 1))
    while start >= 0:
        if marker.startswith(data[start:]):
            return len(data) - start
        start = data.find(marker[:1], start + 1)
    return 0


def extract(archive: bytes, dest: Path, limit: int, refused: list[str]) -> list[str]:
    """Extract what is safe; name each refused entry in `refused`. Returns the names delivered.

    Only plain files and directories, with relative names free of `..`, landing inside `dest`
    even through directories already there (a symbolic link in `dest` is not followed out of it).
    Files are written with the owner's read/write and the executable bit only: no setuid, setgid
    or sticky bits, no owner from the archive. This is what tarfile's `data` filter (PEP 706)
    does, written out because the Python a launcher runs on may predate it (3.11.2 in Debian 12,
    the launcher in a CI job container).
    """
    delivered: list[str] = []
    total = 0
    dest.mkdir(parents=True, exist_ok=True)
    top = os.path.realpath(dest)
    try:
        tar = tarfile.open(fileobj=io.BytesIO(archive))
    except tarfile.TarError:
        refused.append("the archive (not a tar archive)")
        return delivered
    with tar:
        for member in tar:
            if member.name in (".", "./"):
                continue
            parts = PurePosixPath(member.name).parts
            if member.name.startswith("/") or ".." in parts:
                refused.append(f"{member.name} (an absolute path or one with ..)")
                continue
            if not (member.isfile() or member.isdir()):
                refused.append(f"{member.name} (not a plain file or directory)")
                continue
            total += member.size
            if total > limit:
                refused.append(f"{member.name} (over the --output-limit of {limit} bytes)")
                continue
            target = os.path.join(top, *parts)
            if os.path.commonpath([top, os.path.realpath(target)]) != top:
                refused.append(f"{member.name} (would land outside {dest})")
                continue
            try:
                _write(tar, member, target)
            except OSError as e:
                refused.append(f"{member.name} ({e.strerror})")
                continue
            delivered.append(member.name.removeprefix("./"))
    return delivered


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    if member.isdir():
        os.makedirs(target, mode=0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    mode = 0o755 if member.mode & 0o100 else 0o644
    src = tar.extractfile(member)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(src.read() if src is not None else b"")
    os.chmod(target, mode)  # an existing file keeps its old mode through O_CREAT
