"""Building the sandbox image through the SDK, and checking that the engine has the right one."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import docker
import docker.errors

from ... import __file__ as _package_init
from ... import __version__
from ...common.errors import ImageError, ImageMissing, ImageRefused
from ..core.settings import IMAGE as IMAGE  # re-exported: the CLI names it as image.IMAGE
from ..core.settings import IMAGE_REPOSITORY, VERSION_LABEL, module_entrypoint

DEFAULT_BASE = "python:3.12-slim"
OFFLINE_HINT = (
    "on a machine without a registry, build on a base made from the OS packages: `qsandbox build --offline-base`"
)

# The package this launcher runs from: site-packages/qsandbox when installed, src/qsandbox in a
# checkout. The image is built from its files, so an installed qsandbox builds its own image.
PACKAGE = Path(_package_init).resolve().parent
DOCKERFILE = "qsandbox/image/Dockerfile"  # inside the build context
# Besides the .py files, what the wheel carries (pyproject.toml's package-data; a unit test keeps the two equal).
PACKAGE_DATA = ("py.typed", "image/Dockerfile", "image/requirements.txt")
# The image's freshness: the digest of the build context's files that run or shape the image (all
# but launcher/, which never runs inside), as a label. An image whose label differs from this
# installation's digest was built from other sources: refused, `qsandbox build` makes it anew.
CONTEXT_LABEL = "qsandbox.context"
LAUNCHER_ONLY = "qsandbox/launcher/"


class ImageStale(ImageMissing):
    """Raised before anything starts when the image was built from other sources than this
    installation's (a development checkout changed since `qsandbox build`); exit 2, and an
    ImageError, so whatever rebuilds a missing image rebuilds a stale one too."""


def context_files(package: Path = PACKAGE) -> Iterator[tuple[str, Path]]:
    """(name in the build context, file) for every file the image is built from, sorted.

    Exactly what the wheel holds, whether `package` is a checkout's src/qsandbox or an installed
    copy: .py files and the package data, never __pycache__ or an egg-info.
    """
    wanted = [p for p in package.rglob("*.py") if "__pycache__" not in p.relative_to(package).parts]
    wanted += [package / d for d in PACKAGE_DATA]
    for path in sorted(wanted, key=lambda p: p.relative_to(package).as_posix()):
        if not path.is_file():
            raise ImageError(f"{path} is missing from the installed qsandbox: reinstall qsandbox")
        yield f"qsandbox/{path.relative_to(package).as_posix()}", path


def context_digest(package: Path = PACKAGE) -> str:
    """sha256 over the names and bytes of the context's files that the image runs (not launcher/)."""
    digest = hashlib.sha256()
    for name, path in context_files(package):
        if name.startswith(LAUNCHER_ONLY):
            continue
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def context_archive(package: Path = PACKAGE) -> bytes:
    """The build context as a tar archive with fixed owners, modes and times.

    Only the bytes of the files count, so the same source gives the same context, and the same
    image (the engine's build cache hits), from a checkout and from any installation of it.
    """

    def entry(name: str, directory: bool, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode = (tarfile.DIRTYPE, 0o755) if directory else (tarfile.REGTYPE, 0o644)
        info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0, 0, 0, "root", "root"
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        made: set[str] = set()
        for name, path in context_files(package):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                directory = "/".join(parts[:i])
                if directory not in made:
                    made.add(directory)
                    tar.addfile(entry(directory, True))
            data = path.read_bytes()
            tar.addfile(entry(name, False, len(data)), io.BytesIO(data))
    return buf.getvalue()


def ensure_base(client: docker.DockerClient, base: str, say: Callable[[str], None], *, pull: bool = False) -> None:
    """Have the base image locally, pulling it if needed (`pull`: pulled again whatever is there, for
    its security updates); fail with the offline remedy if we can't."""
    if not pull:
        try:
            client.images.get(base)
            return
        except docker.errors.ImageNotFound:
            pass
    say(f"pulling base image {base}")
    try:
        client.images.pull(base)
    except docker.errors.APIError as e:
        raise ImageError(f"cannot pull base image {base} (no registry reachable?): {OFFLINE_HINT}") from e


def build(
    client: docker.DockerClient,
    *,
    base: str = DEFAULT_BASE,
    package: Path = PACKAGE,
    tag: str = IMAGE,
    say: Callable[[str], None] = print,
    pull: bool = False,
) -> str:
    """Build the image from this qsandbox's own files, with visible progress; return its id.
    `pull`: pull the base again first (`qsandbox build --pull`)."""
    archive = context_archive(package)
    ensure_base(client, base, say, pull=pull)
    say(f"building {tag} from {package} on base {base}")
    return stream_build(
        client,
        say,
        archive,
        dockerfile=DOCKERFILE,
        tag=tag,
        buildargs={"BASE_IMAGE": base},
        labels={VERSION_LABEL: __version__, CONTEXT_LABEL: context_digest(package)},
    )


def stream_build(
    client: docker.DockerClient,
    say: Callable[[str], None],
    context: bytes,
    *,
    dockerfile: str,
    tag: str,
    buildargs: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    nocache: bool = False,
) -> str:
    """Build from a context archive through the SDK, passing its progress to `say`; return the image id."""
    image_id: str | None = None
    try:
        for chunk in client.api.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            dockerfile=dockerfile,
            tag=tag,
            buildargs=buildargs,
            labels=labels,
            decode=True,
            rm=True,
            forcerm=True,
            pull=False,
            nocache=nocache,
        ):
            if "error" in chunk:
                raise ImageError(f"image build failed: {chunk['error'].strip()}")
            line = chunk.get("stream", "").rstrip()
            if line:
                say(line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    except docker.errors.APIError as e:
        raise ImageError(f"image build failed: {e.explanation}") from e
    if image_id is None:
        image_id = cast(str, client.images.get(tag).id)  # just built and tagged: it has an id
    return image_id


def check(client: docker.DockerClient, tag: str = IMAGE) -> str:
    """Describe the image for this version; raise ImageError with the remedy if missing or outdated."""
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        others = [t for i in client.images.list(name=IMAGE_REPOSITORY) for t in i.tags if t != tag]
        if others:
            raise ImageMissing(
                f"image {tag} missing; only outdated {', '.join(sorted(others))}: run `qsandbox build`"
            ) from None
        raise ImageMissing(f"image {tag} missing: run `qsandbox build`") from None
    built_for = (image.labels or {}).get(VERSION_LABEL)
    if built_for != __version__:
        raise ImageMissing(
            f"image {tag} was built for qsandbox {built_for}, this is {__version__}: run `qsandbox build`"
        )
    if (image.labels or {}).get(CONTEXT_LABEL) != context_digest():
        raise ImageStale(
            f"image {tag} was built from other sources than this qsandbox's ({PACKAGE}): run `qsandbox build`"
        )
    size = image.attrs.get("Size", 0) / 1e6
    return f"{tag} ({image.short_id.removeprefix('sha256:')}, {size:.0f} MB)"


def check_lab_image(client: docker.DockerClient, name: str) -> None:
    """Refuse `--image NAME` unless it was built FROM this version's image and keeps its entry point.

    Both are read from the engine: the qsandbox.version label (a FROM inherits it; nothing else
    sets it) and the configured entry point, which the sandbox's hand-off depends on.
    """
    try:
        found = client.images.get(name)
    except docker.errors.ImageNotFound:
        raise ImageMissing(f"--image {name} is not on this engine: build it FROM {IMAGE}, or load it") from None
    built_for = (found.labels or {}).get(VERSION_LABEL)
    if built_for is None:
        raise ImageRefused(
            f"--image {name} has no {VERSION_LABEL} label, so it is not built FROM {IMAGE}: rebuild it so"
        )
    if built_for != __version__:
        raise ImageRefused(
            f"--image {name} is built FROM qsandbox {built_for}'s image, this is {__version__}: rebuild it FROM {IMAGE}"
        )
    if (found.labels or {}).get(CONTEXT_LABEL) != context_digest():
        raise ImageStale(
            f"--image {name} is built FROM an image of other sources than this qsandbox's ({PACKAGE}): "
            f"run `qsandbox build`, then rebuild it FROM {IMAGE}"
        )
    entry = (found.attrs.get("Config") or {}).get("Entrypoint")
    want = module_entrypoint("qsandbox.inside.entry")
    if entry != want:
        raise ImageRefused(
            f"--image {name} has entry point {entry}, not qsandbox's {want}: do not set ENTRYPOINT in a lab image"
        )
