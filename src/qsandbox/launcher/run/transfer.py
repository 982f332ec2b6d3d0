"""Files in and out of the sandbox over the attach stream: nothing of the host is ever mounted.

In: the script, and only what the user names (`--include`, `--workdir`), packed here into a tar
archive in an unlinked temporary file and streamed after the start message (the INPUTS channel); the
entry point unpacks it into the /work tmpfs. Credential stores inside a named directory are left out
(and said so); an input holding the key itself is refused before the key goes anywhere. Inputs are
walked and read with directory descriptors and O_NOFOLLOW, never by path again, so a link swapped in
is never followed: a change between the walk and the read is refused and named. Host names are
printed escaped (`shown`).

Out: after the script ends, the entry point streams the /output tmpfs back as a tar archive on
the OUTPUT channel (see `common.mux`); `OutputReceiver` takes it and `Extractor`
writes it into `--output DIR` as it arrives, entry by entry, where nothing runs it: DIR is new or
empty (or --output-merge, which never overwrites), the user's own and nobody else's to write;
nothing is followed out of it, no exec bit comes back unless --output-keep-modes, and names a
repository, a shell or a credential helper would act on are refused. Each refused entry is named.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import queue
import stat
import tarfile
import tarfile as tarfile_mod
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

from ...common.errors import UsageError
from ...common.handoff import MAX_OUTPUT_DEPTH, MAX_OUTPUT_ENTRIES
from ...common.text import shown
from .inputs_policy import leave_out

# Never sent from inside a named directory; naming one with --include sends it on purpose.
CREDENTIAL_NAMES = frozenset({".ssh", ".gnupg", ".qiskit", ".aws", ".docker", ".netrc", ".git-credentials", ".env"})
PAGE = 4096


def is_credential_store(name: str) -> bool:
    return name in CREDENTIAL_NAMES or name.startswith(".env.")


@dataclass
class Inputs:
    """What enters the sandbox at /work: one archive, made once per run (in an unlinked temporary
    file: it is sent in frames, never held whole)."""

    archive: IO[bytes]
    script: PurePosixPath  # the script's path relative to /work
    files: list[tuple[Path, str]] = field(default_factory=list)  # (host path, archive name)
    left_out: list[str] = field(default_factory=list)  # what was not sent, and why
    tmpfs_size: int = 0  # what /work needs: every file and directory rounded up to pages, plus room

    def __post_init__(self) -> None:
        weakref.finalize(self, self.archive.close)  # the temporary file goes with the Inputs

    def close(self) -> None:
        self.archive.close()

    def find(self, needle: str) -> str | None:
        """The first input (its name in /work) whose content holds `needle`, or None."""
        data = needle.encode()
        self.archive.seek(0)
        try:
            with tarfile.open(fileobj=self.archive, mode="r:") as tar:
                for member in tar:
                    f = tar.extractfile(member) if member.isfile() else None
                    tail = b""
                    while f is not None and (chunk := f.read(1 << 20)):
                        if data in tail + chunk:
                            return member.name
                        tail = chunk[-len(data) :]
            return None
        finally:
            self.archive.seek(0)

    def chunks(self, size: int) -> Iterator[bytes]:
        """The archive, `size` bytes at a time, from its start."""
        self.archive.seek(0)
        while chunk := self.archive.read(size):
            yield chunk


def collect(script: Path | None, *, workdir: Path | None, includes: tuple[Path, ...], limit: int) -> Inputs:
    """Pack the script and the named inputs; UsageError (nothing started) for anything amiss.
    No script (`qsandbox lab`): --workdir alone, whole.

    Paths are resolved once, to find the project directory (`base`) and where each named input
    sits in it; from there on nothing is re-resolved. `base` is opened once, every directory below
    it is opened relative to its parent's descriptor with O_NOFOLLOW, and every file is opened the
    same way, checked with fstat to be the very regular file the walk saw, and packed from that
    descriptor. A link or another file swapped in between the walk and the read is refused and
    named, and nothing is sent.
    """
    if script is None:  # a lab: the directory is all there is
        assert workdir is not None, "a lab names its directory"  # an invariant of launcher/run/lab.py
        script = base = workdir.resolve()
    else:
        script = script.resolve()
        base = (workdir or script.parent).resolve()
    if workdir is not None:
        _refuse_too_wide(base, "--workdir")
        if not base.is_dir():
            raise UsageError(f"--workdir {shown(str(workdir))}: not a directory")
        if base not in script.parents and script != base:
            raise UsageError(
                f"the script {shown(str(script))} is not inside --workdir {shown(str(base))}: give the project "
                "directory that holds it"
            )
    inputs = Inputs(archive=io.BytesIO(), script=PurePosixPath(script.relative_to(base).as_posix()))
    try:
        top = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError(f"cannot read {shown(str(base))}: {e.strerror}") from None
    try:
        chosen = (
            {inputs.script.as_posix(): _seen_named(top, inputs.script.parts, f"the script {shown(str(script))}")}
            if script != base
            else {}
        )
        if workdir is not None:
            _add_tree(inputs, chosen, top, ())
        for named in includes:
            path = named if named.is_absolute() else (base if script == base else script.parent) / named
            if not path.exists() and not path.is_symlink():
                raise UsageError(f"--include {shown(str(named))}: no such file or directory")
            path = path.resolve()
            if path != base and base not in path.parents:
                raise UsageError(
                    f"--include {shown(str(named))}: {shown(str(path))} is outside {shown(str(base))}; inputs keep "
                    "their place relative to the script's directory: name a --workdir that holds both"
                )
            parts = path.relative_to(base).parts
            if path.is_dir():
                _refuse_too_wide(path, "--include")
                _add_tree(inputs, chosen, top, parts)
            elif path.is_file():  # named on purpose: sent whatever its name
                chosen["/".join(parts)] = _seen_named(top, parts, f"--include {shown(str(named))}")
            else:
                raise UsageError(f"--include {shown(str(named))}: not a regular file or directory")
        files = sorted(chosen.items())
        inputs.files = [(base / name, name) for name, _ in files]
        archive, inputs.tmpfs_size = _pack(top, files, limit)
        inputs = Inputs(archive, inputs.script, inputs.files, inputs.left_out, inputs.tmpfs_size)
    finally:
        os.close(top)
    return inputs


@dataclass(frozen=True)
class _Seen:
    """A regular file as the walk saw it (lstat): what is read must be this very file."""

    dev: int
    ino: int
    size: int


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in opens at once (and is then refused by fstat), never blocks the launcher.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _changed(name: str, what: str) -> UsageError:
    return UsageError(
        f"the input {shown(name)} changed while the inputs were read ({what}): refused, nothing was sent; "
        "something is changing the project directory (another account, or a tool): run again when it is still"
    )


def _seen_named(top: int, parts: tuple[str, ...], where: str) -> _Seen:
    """The walk's view of a file named on purpose (the script, an --include): lstat relative to its
    directory, reached from `top` without following a link."""
    chain = _DirChain(os.dup(top))
    try:
        st = os.stat(parts[-1], dir_fd=chain.open(parts[:-1], create=False), follow_symlinks=False)
    except _Refused as e:
        raise _changed("/".join(parts), shown(str(e))) from None
    except OSError as e:
        raise UsageError(f"{where}: {e.strerror}") from None
    finally:
        chain.close()
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{where}: not a regular file")
    return _Seen(st.st_dev, st.st_ino, st.st_size)


def _add_tree(inputs: Inputs, chosen: dict[str, _Seen], top: int, start: tuple[str, ...]) -> None:
    for parts, why, seen in _walk(top, start):
        name = "/".join(parts)
        if seen is None:
            inputs.left_out.append(f"{shown(name)} ({why})")
        else:
            chosen.setdefault(name, seen)


def _refuse_too_wide(path: Path, option: str) -> None:
    homes = {Path.home().resolve(), Path(os.path.expanduser("~")).resolve()}
    if path.resolve() == Path("/") or path.resolve() in homes:
        if option == "--output":
            raise UsageError(
                f"--output {shown(str(path))}: refusing to deliver the sandbox's output into a whole home directory "
                "or /; name a new directory for it, such as ./results"
            )
        raise UsageError(
            f"{option} {shown(str(path))}: refusing to send a whole home directory or / into the sandbox; "
            "name the project directory or the files the script needs"
        )


def _walk(top: int, start: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str, _Seen | None]]:
    """Regular files under `start` (parts below `top`), each with the walk's lstat of it; and what
    is left out, with the reason (credential stores, links, special files). Walked with directory
    descriptors, each opened relative to its parent with O_NOFOLLOW: a link is never followed, not
    even one swapped in for a directory after it was listed (that is refused). Depth first, names
    sorted; one descriptor open per level."""
    stack: list[tuple[int, tuple[str, ...], Iterator[str]]] = []
    try:
        chain = _DirChain(os.dup(top))
        try:
            first = os.dup(chain.open(start, create=False))
        except _Refused as e:
            raise _changed("/".join(start), shown(str(e))) from None
        except OSError as e:
            raise UsageError(f"cannot read {shown('/'.join(start))}: {e.strerror}") from None
        finally:
            chain.close()
        _enter(stack, first, start)
        while stack:
            fd, here, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                os.close(fd)
                continue
            parts = (*here, name)
            if leave_out(parts):
                yield (
                    parts,
                    f"a credential store: to send it on purpose, --include {shown('/'.join(parts))}",
                    None,
                )
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since it was listed: not there when the walk looked
            except OSError as e:
                raise UsageError(f"cannot read {shown('/'.join(parts))}: {e.strerror}") from None
            if stat.S_ISLNK(st.st_mode):
                yield parts, "a symbolic link: not followed", None
            elif stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        raise _changed("/".join(parts), "a directory no longer") from None
                    raise UsageError(f"cannot read {shown('/'.join(parts))}: {e.strerror}") from None
                now = os.fstat(sub)
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    os.close(sub)
                    raise _changed("/".join(parts), "another directory now")
                _enter(stack, sub, parts)
            elif stat.S_ISREG(st.st_mode):
                yield parts, "", _Seen(st.st_dev, st.st_ino, st.st_size)
            else:
                yield parts, "not a regular file", None
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _enter(stack: list[tuple[int, tuple[str, ...], Iterator[str]]], fd: int, parts: tuple[str, ...]) -> None:
    try:
        names = sorted(os.listdir(fd))
    except OSError as e:
        os.close(fd)
        raise UsageError(f"cannot read {shown('/'.join(parts) or '.')}: {e.strerror}") from None
    stack.append((fd, parts, iter(names)))


def _pack(top: int, files: list[tuple[str, _Seen]], limit: int) -> tuple[IO[bytes], int]:
    """A tar archive of the files (plain modes, no owners: the entry point sets its own), and the
    size of the tmpfs that holds them. Each file is opened relative to its directory's descriptor
    with O_NOFOLLOW and read from that descriptor only if fstat finds the regular file the walk saw."""
    total = sum(seen.size for _, seen in files)
    if total > limit:
        raise UsageError(
            f"the inputs come to {total} bytes, over the --input-limit of {limit}: send less, or raise the limit"
        )
    buf = tempfile.TemporaryFile()  # noqa: SIM115 - the Inputs own it; unlinked from the start
    dirs: set[str] = set()
    tmpfs = 64 << 10  # room for the tmpfs's own bookkeeping and the entry point's directories
    packed = 0
    chain = _DirChain(os.dup(top))
    try:
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, seen in files:
                for parent in reversed(PurePosixPath(name).parents[:-1]):
                    if str(parent) not in dirs:
                        dirs.add(str(parent))
                        tar.addfile(_info(str(parent), tarfile.DIRTYPE, 0, 0o755))
                        tmpfs += PAGE
                size = _add_file(tar, chain, name, seen, limit - packed, limit)
                packed += size
                tmpfs += (size + PAGE - 1) // PAGE * PAGE + PAGE
    except BaseException:
        buf.close()
        raise
    finally:
        chain.close()
    buf.seek(0)
    return buf, tmpfs


def _add_file(tar: tarfile.TarFile, chain: _DirChain, name: str, seen: _Seen, room: int, limit: int) -> int:
    """Add the regular file the walk saw as `name`, read (in chunks) through a descriptor opened
    without following any link; refused (UsageError) if anything else is there now, or if it
    changes size while it is read. Returns its size."""
    parts = tuple(name.split("/"))
    try:
        fd = os.open(parts[-1], FILE_FLAGS, dir_fd=chain.open(parts[:-1], create=False))
    except _Refused as e:
        raise _changed(name, shown(str(e))) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _changed(name, "a symbolic link now; not followed") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise _changed(name, "gone") from None
        raise UsageError(f"cannot read {shown(name)}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _changed(name, "not a regular file now")
        if (st.st_dev, st.st_ino) != (seen.dev, seen.ino):
            raise _changed(name, "another file now")
        if st.st_size > room:
            raise UsageError(
                f"the inputs grew past the --input-limit of {limit} while they were read ({shown(name)} among "
                "them): send less, or raise the limit"
            )
        try:
            tar.addfile(_info(name, tarfile.REGTYPE, st.st_size, 0o644), f)
            grew = f.read(1)
        except OSError as e:
            if e.errno is None:  # tarfile's "unexpected end of data"
                raise _changed(name, "it shrank while it was read") from None
            raise UsageError(f"cannot read {shown(name)}: {e.strerror}") from None
        if grew:
            raise _changed(name, "it grew while it was read")
        return st.st_size


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, 0
    return info


def check_output(dest: Path, *, merge: bool) -> None:
    """Before anything starts: --output DIR is made if missing; it must be the invoking user's, not
    writable by group or others, not the home directory or /, and empty unless --output-merge.
    UsageError (nothing started) otherwise. `extract` checks owner and mode again on the directory
    it opens, so a swap in between changes nothing."""
    _refuse_too_wide(Path(os.path.abspath(dest)), "--output")
    try:
        dest.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError(f"--output {dest}: {e.strerror}") from None
    try:
        problem = _unsafe_dir(fd)
        if problem:
            raise UsageError(f"--output {dest}: {problem}")
        if not merge and os.listdir(fd):
            raise UsageError(
                f"--output {dest}: not empty; name a new or empty directory, or add --output-merge "
                "(which still never overwrites a file)"
            )
    finally:
        os.close(fd)


def _unsafe_dir(fd: int) -> str:
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by you (uid {os.geteuid()}): name a directory of your own"
    if st.st_mode & 0o022:
        return (
            f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): another account could swap "
            "what lands there; chmod go-w it, or name a directory of your own"
        )
    return ""


def refused_name(parts: tuple[str, ...]) -> str:
    """Why a delivered name is refused by default ('' if it is not): it could be run or read by
    something on the host (a repository's hooks, a shell's start-up files, a credential store)."""
    if ".git" in parts:
        return "under .git/: a repository's hooks would run it"
    if parts[0].startswith("."):
        return "a dotfile at the top: shells and tools read those"
    if any(is_credential_store(p) for p in parts):
        return "a credential store's name"
    return ""


class OutputReceiver:
    """Extracts the /output tar stream (the OUTPUT channel) into `dest` as it arrives.

    One archive per run: OUTPUT frames after its EOF are dropped. Past the budget the extractor
    says `overflowed`, and the stream is cut.
    """

    def __init__(
        self,
        dest: Path | None,
        limit: int,
        say: Callable[[str], None],
        *,
        keep_modes: bool = False,
        source: str = "/output",
    ) -> None:
        self.dest, self.limit, self.say, self.keep_modes = dest, limit, say, keep_modes
        self.source = source  # where the entries came from, as refusals name it (a lab: its /work)
        self._state = "before"  # "before" the archive, "in" it, "after" it
        self._extractor: Extractor | None = None
        self.delivered: list[str] | None = None  # None until an archive arrived
        self.refused: list[str] = []

    def feed(self, data: bytes) -> None:
        if self._state == "after":
            return
        if self._extractor is None:
            self._state = "in"
            self._extractor = Extractor(self.dest, self.limit, self.refused, keep_modes=self.keep_modes)
        self._extractor.feed(data)

    def end(self) -> None:
        """The archive's EOF frame."""
        if self._state == "after":
            return
        if self._extractor is None:
            self._extractor = Extractor(self.dest, self.limit, self.refused, keep_modes=self.keep_modes)
        self._finish()

    def _finish(self) -> None:
        assert self._extractor is not None  # set when the archive began
        self._state = "after"
        self._extractor.close()
        self.delivered = self._extractor.delivered
        for entry in self.refused:
            self.say(f"refused from {self.source}: {shown(entry)}")

    def closing_note(self) -> str:
        """What the closing lines say of /output."""
        got = self.delivered
        if got is None:
            return "/output: nothing arrived from the sandbox"
        return f"/output: {len(got)} entr{'y' if len(got) == 1 else 'ies'} delivered to {self.dest}"

    @property
    def overflowed(self) -> bool:
        """The archive grew past any /output the budget allows: the stream should be cut."""
        return self._extractor is not None and self._extractor.overflowed

    def flush(self) -> None:
        """At the end of the stream: an archive begun and never ended is damaged."""
        if self._state == "in":
            assert self._extractor is not None  # set when the archive began
            self._extractor.damaged("its end (the sandbox ended before it arrived)")
            self._finish()


class _Feed(io.RawIOBase):
    """A bounded pipe from the stream's thread (`put`) to the extracting thread (`readinto`)."""

    def __init__(self) -> None:
        super().__init__()
        self._q: queue.Queue[bytes] = queue.Queue(maxsize=16)
        self._buf = b""
        self._eof = False
        self.consumed = 0  # bytes read out so far

    def put(self, data: bytes, alive: Callable[[], bool]) -> None:
        while alive():
            try:
                self._q.put(data, timeout=0.2)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf and not self._eof:
            self._buf = self._q.get()
            self._eof = not self._buf
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self.consumed += n
        return n


class _Watching(tarfile.TarInfo):
    """Notes each header tarfile gives up on: in a stream it then ends quietly, as if at the end."""

    gave_up: list[int]  # offsets; a fresh list for each extraction (a subclass made in Extractor._run)

    @classmethod
    def fromtarfile(cls, tarfile: Any) -> Any:  # tarfile's own signature, parameter name included
        try:
            return super().fromtarfile(tarfile)
        except tarfile_mod.HeaderError as e:  # not typeshed's: Invalid-, Truncated-, EOF-, EmptyHeaderError
            if type(e).__name__ not in ("InvalidHeaderError", "TruncatedHeaderError"):
                raise  # EOF and empty headers: the archive's end
            cls.gave_up.append(tarfile.offset)
            raise


HEADER_ROOM = 2048  # a tar header with a PAX record for a long name, per entry


class Extractor:
    """Extracts a plain tar stream into `dest` entry by entry, in a thread of its own, as it arrives.

    Safe by construction, not by checks of paths: `dest` is opened once (O_NOFOLLOW) and its owner
    and mode checked on that descriptor; every directory below it is opened relative to its
    parent's descriptor with O_NOFOLLOW | O_DIRECTORY, and every file is created with O_EXCL |
    O_NOFOLLOW, so no link, swapped in before or during the extraction, is ever followed and no
    existing file is ever overwritten. Only plain files and directories with relative names free of
    `..` are accepted, within MAX_OUTPUT_DEPTH levels and MAX_OUTPUT_ENTRIES entries; names under
    .git/, top-level dotfiles and credential stores' names are refused. Files get the owner's
    read/write bits and the group's and others' read bits they had, never more (an exec bit only
    with `keep_modes`; never setuid, setgid or sticky); the user's umask applies. A refused or
    failed entry is named in `refused` and the rest still delivered. The budget is the data of the
    files (`limit`, --output-limit) and MAX_OUTPUT_ENTRIES entries; the stream itself may carry
    at most the data plus HEADER_ROOM per allowed entry, counted on what really arrives; past it the
    rest is discarded, never printed.
    """

    def __init__(self, dest: Path | None, limit: int, refused: list[str], *, keep_modes: bool = False) -> None:
        self.dest, self.limit, self.refused, self.keep_modes = dest, limit, refused, keep_modes
        self.delivered: list[str] = []
        self.received = 0  # bytes of the tar stream so far
        self.entries = 0
        self.data = 0  # bytes of file data accepted so far
        self.overflowed = False  # more arrived than any /output within the limit can be: stop the sandbox
        self._stopped = False  # no more data goes to the extracting thread
        self._cut = False  # ... because the stream was cut short (said once, in refused)
        self._feed = _Feed()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _alive(self) -> bool:
        return self._thread.is_alive()

    def feed(self, data: bytes) -> None:
        if self._stopped or not data:
            return
        self.received += len(data)
        if self.received > self.limit + HEADER_ROOM * MAX_OUTPUT_ENTRIES + tarfile.RECORDSIZE:
            self.overflowed = True
            self._stop(f"the rest of the archive (over the --output-limit of {self.limit} bytes); discarded")
            return
        self._feed.put(data, self._alive)

    def damaged(self, where: str) -> None:
        self._stop(f"the rest of the archive (damaged: {where})")

    def _stop(self, why: str) -> None:
        if not self._stopped:
            self._stopped = self._cut = True
            self.refused.append(why)
            self._feed.put(b"", self._alive)

    def close(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._feed.put(b"", self._alive)
        self._thread.join()

    def _run(self) -> None:
        try:
            top = self._open_top()
        except _Refused as e:
            self.refused.append(f"everything: {shown(str(e))}")
            self._drain()
            return
        chain = _DirChain(top)
        try:
            watching = cast(type[_Watching], type("Watching", (_Watching,), {"gave_up": []}))
            reader = io.BufferedReader(self._feed, 1 << 16)
            with tarfile.open(fileobj=reader, mode="r|", tarinfo=watching) as tar:
                for member in tar:
                    cast(Any, tar).members.clear()  # a stream of 100,000 entries keeps none in memory
                    name = member.name.removeprefix("./")
                    if member.size > self.limit - self.data:
                        # Stop here: tarfile would read its way past a member of any declared size.
                        self._stop_here(f"{shown(name)} and the rest (over the --output-limit of {self.limit} bytes)")
                        break
                    try:
                        self._entry(tar, member, name, chain)
                    except _Refused as e:
                        self.refused.append(f"{shown(name)} ({e})")
                    except OSError as e:
                        self.refused.append(f"{shown(name)} ({e.strerror or e})")
                    except ValueError as e:  # a name or header tarfile or the OS cannot take (a NUL)
                        self.refused.append(f"{shown(name)} (a name or header that cannot be written: {e})")
        except (tarfile.TarError, ValueError, EOFError) as e:
            self._stop_here(f"the rest of the archive (not a plain tar archive: {e})")
        finally:
            chain.close()
        self._drain()
        if watching.gave_up:  # tarfile ends quietly at an invalid header after the first one
            self._stop_here(f"the rest of the archive (damaged: an invalid header at byte {watching.gave_up[0]})")

    def _stop_here(self, why: str) -> None:
        if not self._cut:  # a stream cut short was said already
            self._cut = True
            self.refused.append(shown(why))

    def _drain(self) -> None:
        """Read (and drop) what is left of the stream, so the stream's thread never waits on us."""
        buf = bytearray(1 << 16)
        while self._feed.readinto(buf):
            pass

    def _open_top(self) -> int | None:
        if self.dest is None:
            return None
        try:
            self.dest.mkdir(parents=True, exist_ok=True, mode=0o755)  # check_output made it; gone since?
            fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise _Refused(f"--output {self.dest}: {e.strerror}") from None
        problem = _unsafe_dir(fd)
        if problem:
            os.close(fd)
            raise _Refused(f"--output {self.dest}: {problem}")
        return fd

    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, chain: _DirChain) -> None:
        self.entries += 1
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if not parts:
            return
        if self.entries > MAX_OUTPUT_ENTRIES:
            raise _Refused(f"over {MAX_OUTPUT_ENTRIES} entries")
        if name.startswith("/") or ".." in parts:
            raise _Refused("an absolute path or one with ..")
        if not (member.isfile() or member.isdir()):
            raise _Refused("not a plain file or directory")
        if len(parts) > MAX_OUTPUT_DEPTH:
            raise _Refused(f"deeper than {MAX_OUTPUT_DEPTH} levels")
        why = refused_name(parts)
        if why:
            raise _Refused(why)
        if member.isfile():
            self.data += member.size  # within the limit: checked before the member was taken
        if chain.top is None:
            return  # no --output: the archive is read and dropped
        if member.isdir():
            chain.open(parts, create=True)
        else:
            parent = chain.open(parts[:-1], create=True)
            # Never wider than it was, never writable by others, executable only when asked for.
            mode = member.mode & (0o755 if self.keep_modes else 0o644)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(parts[-1], flags, mode, dir_fd=parent)
            except FileExistsError:
                raise _Refused("already exists; not overwritten") from None
            src = tar.extractfile(member)
            with os.fdopen(fd, "wb") as f:
                while src is not None and (chunk := src.read(1 << 20)):
                    f.write(chunk)
        self.delivered.append(name)


class _Refused(Exception):
    """One entry not delivered, and why."""


class _DirChain:
    """Descriptors of the directories from `top` down to the last one used, each opened relative to
    its parent with O_NOFOLLOW (entries arrive grouped by directory, so most opens are reused)."""

    def __init__(self, top: int | None) -> None:
        self.top = top
        self._chain: list[tuple[str, int]] = []

    def open(self, parts: tuple[str, ...], *, create: bool) -> int:
        assert self.top is not None  # only called with a destination
        keep = 0
        while keep < min(len(parts), len(self._chain)) and self._chain[keep][0] == parts[keep]:
            keep += 1
        for _, fd in self._chain[keep:]:
            os.close(fd)
        del self._chain[keep:]
        for part in parts[keep:]:
            parent = self._chain[-1][1] if self._chain else self.top
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=parent)
            try:
                fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _Refused(f"{shown(part)} is not a directory here (a link or a file); not followed") from None
                raise
            self._chain.append((part, fd))
        return self._chain[-1][1] if self._chain else self.top

    def close(self) -> None:
        for _, fd in self._chain:
            os.close(fd)
        self._chain.clear()
        if self.top is not None:
            os.close(self.top)


def extract(archive: bytes, dest: Path, limit: int, refused: list[str], *, keep_modes: bool = False) -> list[str]:
    """Extract a whole archive held in memory (as `Extractor` does with a stream); the names delivered."""
    x = Extractor(dest, limit, refused, keep_modes=keep_modes)
    for i in range(0, len(archive), 1 << 16):
        x.feed(archive[i : i + (1 << 16)])
    x.close()
    return x.delivered
