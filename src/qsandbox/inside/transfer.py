"""The entry point's half of the file transfer (the launcher's is `launcher.transfer`).

In: the archive that follows the start message on stdin is unpacked into the /work tmpfs, owned by
the sandbox user and made read-only (files 0400, directories 0500). Only plain files and
directories with relative names are accepted: the launcher made the archive, but the entry point
does not trust a stream it did not make.

Out: when the script has ended, the /output tmpfs goes back on stdout as a tar archive in base64
lines between the run's markers. Whatever cannot be read is named on stderr and left out; links and
special files go in as what they are, and the launcher refuses them.
"""

from __future__ import annotations

import base64
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import PurePosixPath

from ..common.handoff import OUTPUT_BEGIN, OUTPUT_END, HandoffError
from ..common.paths import OUTPUT_DIR, WORKDIR


def read_exactly(fd: int, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = os.read(fd, min(1 << 20, size - len(buf)))
        if not chunk:
            raise HandoffError("the launcher went away while sending the inputs")
        buf += chunk
    return bytes(buf)


def unpack(archive: bytes, top: str = str(WORKDIR)) -> None:
    dirs: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
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
                data = src.read() if src is not None else b""
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(path, 0o400)
            else:
                raise HandoffError(f"refused input {member.name!r}: not a plain file or directory")
    for d in sorted(dirs, key=len, reverse=True):
        os.chmod(d, 0o500)
    os.chmod(top, 0o500)


def send_output(marker: str, write: Callable[[bytes], None], say: Callable[[str], None]) -> None:
    """Pack /output and write the frame; what cannot be read is named and left out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(str(OUTPUT_DIR), onerror=None):
            for name in sorted(dirnames) + sorted(filenames):
                path = os.path.join(dirpath, name)
                arcname = os.path.relpath(path, str(OUTPUT_DIR))
                try:
                    info = tar.gettarinfo(path, arcname)
                    if info.isfile():
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
                except OSError as e:
                    say(f"/output/{arcname} could not be read ({e.strerror}); left out")
    text = base64.encodebytes(buf.getvalue())
    write(OUTPUT_BEGIN + marker.encode() + b"\n" + text + OUTPUT_END + marker.encode() + b"\n")
