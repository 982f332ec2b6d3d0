"""The entry point's half of the file transfer (the launcher's is `launcher.transfer`).

In: the tar stream that follows the start message (the INPUTS channel) is unpacked, as it arrives,
into the /work tmpfs, owned by the sandbox user and made read-only (files 0400, directories 0500;
a lab's stay writable: JupyterLab saves there).
Only plain files and directories with relative names are accepted: the launcher made the archive,
but the entry point does not trust a stream it did not make.

Out: when the script has ended, the /output tmpfs goes back as one plain tar stream on the OUTPUT
channel of the stream (common/mux.py), entry by entry (`send_output`). Whatever cannot be read
is named on stderr and left out; links and special files go in as what they are, and the launcher
refuses them.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import PurePosixPath

from ..common import handoff
from ..common.handoff import HandoffError
from ..common.paths import OUTPUT_DIR, WORKDIR
from ..common.text import shown

TYPE_CHECKING = False  # not typing's: the entry point imports this module on every run
if TYPE_CHECKING:
    from typing import IO


def unpack(stream: IO[bytes], top: str = str(WORKDIR), *, writable: bool = False) -> None:
    """Unpack the tar stream as it is read (nothing held whole); read-only unless `writable` (a lab)."""
    dirs: list[str] = []
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts or not name.parts:
                raise HandoffError(f"refused input name {member.name!r}")
            path = os.path.join(top, *name.parts)
            if member.isdir():
                os.makedirs(path, mode=0o700, exist_ok=True)
                dirs.append(path)
            elif member.isfile():
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                src = tar.extractfile(member)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as f:
                    if src is not None:
                        shutil.copyfileobj(src, f, 1 << 16)
                os.chmod(path, 0o600 if writable else 0o400)
            else:
                raise HandoffError(f"refused input {member.name!r}: not a plain file or directory")
    if writable:
        return
    for d in sorted(dirs, key=len, reverse=True):
        os.chmod(d, 0o500)
    os.chmod(top, 0o500)


MAX_ENTRIES = handoff.MAX_OUTPUT_ENTRIES
MAX_DEPTH = handoff.MAX_OUTPUT_DEPTH
_CHUNK = 1 << 16  # what goes into one frame


class _Chunks:
    """Bytes in, chunks of at most _CHUNK out, to `write`: nothing is held whole."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write, self.buf = write, bytearray()

    def add(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= _CHUNK:
            self.write(bytes(self.buf[:_CHUNK]))
            del self.buf[:_CHUNK]

    def close(self) -> None:
        if self.buf:
            self.write(bytes(self.buf))
            self.buf.clear()


def _header(name: str, kind: bytes, mode: int, size: int = 0, mtime: float = 0, link: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime, info.linkname = kind, mode & 0o7777, size, int(mtime), link
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def send_output(write: Callable[[bytes], None], say: Callable[[str], None]) -> None:
    """Stream /output as a plain tar archive, in chunks to `write` (the caller frames them).

    Streamed, entry by entry, so its size costs no memory; walked without recursion. Each name is
    sent once as what it is (a hard link's every name as a plain file); links and special files
    go as headers only, and the launcher refuses them. What cannot be read, what lies deeper than
    MAX_DEPTH and what is past MAX_ENTRIES is named on stderr and left out.
    """
    out = _Chunks(write)
    sent = over = 0
    # The files' data sent is at most what the tmpfs can hold (--output-limit): a sparse file claims
    # any size without holding it, and would otherwise be streamed, zeros and all, forever.
    fs = os.statvfs(str(OUTPUT_DIR))
    room = [fs.f_blocks * fs.f_frsize]
    stack: list[tuple[str, str, int]] = [(str(OUTPUT_DIR), "", 1)]  # (path, archive prefix, depth)
    while stack:
        path, prefix, depth = stack.pop()
        try:
            with os.scandir(path) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError as e:
            say(f"/output/{shown(prefix)} could not be read ({e.strerror}); left out")
            continue
        subdirs = []
        for entry in found:
            arcname = prefix + entry.name
            if sent >= MAX_ENTRIES:
                over += 1
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if depth >= MAX_DEPTH:
                        say(f"/output/{shown(arcname)}: deeper than {MAX_DEPTH} levels; its contents left out")
                    else:
                        subdirs.append((entry.path, arcname + "/", depth + 1))
                    out.add(_header(arcname, tarfile.DIRTYPE, st.st_mode, mtime=st.st_mtime))
                elif stat.S_ISREG(st.st_mode):
                    if not _send_file(out, entry.path, arcname, say, room):
                        continue
                elif stat.S_ISLNK(st.st_mode):
                    out.add(_header(arcname, tarfile.SYMTYPE, st.st_mode, link=os.readlink(entry.path)))
                else:
                    kind = tarfile.FIFOTYPE if stat.S_ISFIFO(st.st_mode) else tarfile.CHRTYPE
                    out.add(_header(arcname, kind, st.st_mode))
                sent += 1
            except OSError as e:
                say(f"/output/{shown(arcname)} could not be read ({e.strerror}); left out")
        stack.extend(reversed(subdirs))
    if over:
        say(f"/output holds more than {MAX_ENTRIES} entries: {over} left out")
    out.add(b"\0" * (2 * tarfile.BLOCKSIZE))
    out.close()


def _send_file(out: _Chunks, path: str, arcname: str, say: Callable[[str], None], room: list[int]) -> bool:
    """A file's header and exactly the size it had when opened (padded if it shrank meanwhile);
    False (said why) for a file larger than the room left."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "no longer a plain file")
        if st.st_size > room[0]:
            say(
                f"/output/{shown(arcname)} claims {st.st_size} bytes, more than /output holds "
                "(a sparse file?); left out"
            )
            return False
        room[0] -= st.st_size
        out.add(_header(arcname, tarfile.REGTYPE, st.st_mode, st.st_size, st.st_mtime))
        left = st.st_size
        while left:
            data = f.read(min(left, 1 << 20))
            if not data:
                say(f"/output/{shown(arcname)} shrank while it was sent; padded with zeros")
                out.add(b"\0" * left)
                break
            out.add(data)
            left -= len(data)
        out.add(b"\0" * (-st.st_size % tarfile.BLOCKSIZE))
    return True
