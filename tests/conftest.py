"""Shared fixtures: a random canary key per test, the engine, the image, and leak searches."""

from __future__ import annotations

import base64
import os
import secrets
import string
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def new_canary() -> str:
    """A random, key-shaped value: 44 URL-safe characters, like an IBM Cloud API key."""
    alphabet = string.ascii_letters + string.digits + "_-"
    return "".join(secrets.choice(alphabet) for _ in range(44))


def encodings(value: str) -> list[bytes]:
    """The literal, URL-encoded and base64 forms (at each of the three alignments)."""
    raw = value.encode()
    forms = {raw, urllib.parse.quote(value, safe="").encode()}
    for shift in range(3):
        b64 = base64.b64encode(b"\0" * shift + raw)
        # drop the first and last 4 characters: they depend on the neighbouring bytes
        forms.add(b64[4:-4])
    return sorted(forms)


@pytest.fixture
def canary() -> str:
    return new_canary()


def qsandbox(*args: str, input: str | None = None, env: dict[str, str] | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "qsandbox", *args],
        input=input, env=full_env, capture_output=True, text=True, timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        if os.environ.get("CI"):
            raise
        pytest.skip("no Docker engine (run scripts/setup.sh)")
    return client


@pytest.fixture(scope="session")
def image(docker_client) -> Iterator[str]:
    """The image for this version: reused when present, built once per session otherwise.

    At the end of the session, no labelled container or network may remain on the engine.
    """
    from qsandbox import image as image_mod
    from qsandbox.errors import ImageError
    from qsandbox.settings import IMAGE

    try:
        image_mod.check(docker_client)
    except ImageError:
        base = os.environ.get("QSANDBOX_BASE_IMAGE") or (
            "qsandbox-base:bookworm"
            if docker_client.images.list(name="qsandbox-base")
            else image_mod.DEFAULT_BASE
        )
        image_mod.build(docker_client, base=base, context=ROOT, say=lambda _l: None)
    yield IMAGE
    from qsandbox import sandbox

    left = sandbox.leftovers(docker_client)
    sandbox.sweep(docker_client)
    assert not left, f"tests left labelled objects behind: {left}"


class LeakSearch:
    """Searches every place the canary might land for it, in all its encodings."""

    DATA_ROOT = Path("/var/lib/docker")
    HOST_DIRS = [Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path.home(), ROOT]

    def __init__(self, client, canary: str) -> None:
        self.client = client
        self.needles = encodings(canary)
        self.since = time.time() - 1

    def _file_hits(self, root: Path) -> list[str]:
        hits = []
        if not root.exists():
            return hits
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in (".git", ".venv", "proc")]
            for name in filenames:
                p = Path(dirpath, name)
                try:
                    st = p.lstat()
                    if not p.is_file() or st.st_mtime < self.since or st.st_size > 256 << 20:
                        continue
                    data = p.read_bytes()
                except OSError:
                    continue
                if any(n in data for n in self.needles):
                    hits.append(str(p))
        return hits

    def inspect_hits(self) -> list[str]:
        api = self.client.api
        blobs = {}
        for c in api.containers(all=True):
            blobs[f"container {c['Id'][:12]}"] = repr(api.inspect_container(c["Id"]))
        for n in api.networks():
            blobs[f"network {n['Name']}"] = repr(api.inspect_network(n["Id"]))
        for i in api.images(name="qsandbox"):
            blobs[f"image {i['Id'][:19]}"] = repr(api.inspect_image(i["Id"])) + repr(api.history(i["Id"]))
        return [k for k, v in blobs.items() if any(n.decode() in v for n in self.needles)]

    def all_hits(self) -> list[str]:
        hits = self.inspect_hits()
        if os.access(self.DATA_ROOT, os.R_OK):
            for top in self.DATA_ROOT.iterdir():
                if top.name in ("overlay2", "vfs", "fuse-overlayfs"):
                    # Layer stores hold every image file: search only the layers made since start.
                    for layer in top.iterdir():
                        if layer.stat().st_mtime >= self.since:
                            hits += self._file_hits(layer)
                else:
                    hits += self._file_hits(top)
        for d in self.HOST_DIRS:
            hits += self._file_hits(d)
        return hits


@pytest.fixture
def leak_search(docker_client, canary) -> LeakSearch:
    return LeakSearch(docker_client, canary)
