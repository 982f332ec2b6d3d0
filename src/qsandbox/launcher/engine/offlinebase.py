"""A base image made from the OS packages, for machines no registry reaches (air-gapped labs, CI).

debootstrap makes a minimal Debian with python3 and venv; the host's CA bundle goes in with it, so
that pip in the image build works behind a TLS-intercepting proxy; `docker import` makes it an image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from ...common.errors import ImageError, UsageError

OFFLINE_BASE = "qsandbox-base:bookworm"
SUITE = "bookworm"
PACKAGES = "python3,python3-venv,ca-certificates"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def ensure(
    client: docker.DockerClient, name: str = OFFLINE_BASE, *, suite: str = SUITE, say: Callable[[str], None] = print
) -> str:
    """Have the offline base `name` on the engine, making it when missing (needs root and debootstrap)."""
    try:
        client.images.get(name)
        say(f"offline base: {name} already present")
        return name
    except docker.errors.ImageNotFound:
        pass
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise UsageError("making the offline base needs debootstrap: `apt-get install debootstrap`, then re-run")
    if os.geteuid() != 0:
        raise UsageError(
            f"making the offline base {name} needs root once (debootstrap): run `sudo qsandbox build --offline-base`"
        )
    # /var/tmp: a root file system of ~250 MB would not fit a RAM-backed /tmp on small machines.
    with tempfile.TemporaryDirectory(prefix="qsandbox-base.", dir="/var/tmp") as tmp:
        root = Path(tmp)
        say(f"offline base: debootstrap {suite} into {root} (about a minute)")
        done = subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={PACKAGES}", suite, str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise ImageError(f"debootstrap {suite} failed ({last}): is the Debian mirror reachable?")
        if HOST_CA_BUNDLE.is_file():
            # The host's bundle includes any proxy CA the host trusts; pip in the image build needs it.
            shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for leftover in (root / cache).glob("*"):
                if leftover.is_file():
                    leftover.unlink()
        # mkdtemp made the root 0700, and the archive carries that mode for "/": Docker ignores it,
        # but Podman applies it, and then no non-root user can exec anything in the image.
        root.chmod(0o755)
        say(f"offline base: importing as {name}")
        repository, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
        with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
            assert tar.stdout is not None  # stdout=PIPE
            try:
                client.api.import_image_from_stream(
                    tar.stdout, repository=repository, tag=tag, changes=["ENV LANG=C.UTF-8", 'CMD ["python3"]']
                )
            except docker.errors.APIError as e:
                raise ImageError(f"importing the offline base failed: {e.explanation}") from e
        if tar.returncode != 0:
            raise ImageError(f"archiving the offline base's root file system failed (tar exit {tar.returncode})")
    say(f"offline base: {name} ready")
    return name
