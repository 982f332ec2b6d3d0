"""Building the sandbox image through the SDK, and checking that the engine has the right one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import docker
import docker.errors

from .. import __version__
from ..common.errors import ImageError, UsageError
from .settings import IMAGE as IMAGE  # re-exported: the CLI names it as image.IMAGE
from .settings import IMAGE_REPOSITORY, VERSION_LABEL

DEFAULT_BASE = "python:3.12-slim"
OFFLINE_HINT = (
    "build an offline base from the OS packages with `bash scripts/offline-base.sh`, "
    "then run `qsandbox build --base-image qsandbox-base:bookworm`"
)


def find_context(explicit: Path | None = None) -> Path:
    """The directory holding the Dockerfile: --context, the checkout this package runs from, or cwd."""
    candidates = [explicit] if explicit else [Path(__file__).resolve().parents[2], Path.cwd()]
    for c in candidates:
        if c is not None and (c / "Dockerfile").is_file() and (c / "src" / "qsandbox").is_dir():
            return c
    where = explicit or "this installation or the current directory"
    raise UsageError(f"no qsandbox Dockerfile in {where}: run from a qsandbox checkout or pass --context DIR")


def ensure_base(client: docker.DockerClient, base: str, say: Callable[[str], None]) -> None:
    """Have the base image locally, pulling it if needed; fail with the offline remedy if we can't."""
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
    context: Path | None = None,
    tag: str = IMAGE,
    say: Callable[[str], None] = print,
) -> str:
    """Build the image with visible progress; return its id."""
    ctx = find_context(context)
    ensure_base(client, base, say)
    say(f"building {tag} from {ctx} on base {base}")
    image_id: str | None = None
    try:
        for chunk in client.api.build(
            path=str(ctx),
            tag=tag,
            buildargs={"BASE_IMAGE": base},
            labels={VERSION_LABEL: __version__},
            decode=True,
            rm=True,
            forcerm=True,
            pull=False,
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
            raise ImageError(
                f"image {tag} missing; only outdated {', '.join(sorted(others))}: run `qsandbox build`"
            ) from None
        raise ImageError(f"image {tag} missing: run `qsandbox build`") from None
    built_for = (image.labels or {}).get(VERSION_LABEL)
    if built_for != __version__:
        raise ImageError(f"image {tag} was built for qsandbox {built_for}, this is {__version__}: run `qsandbox build`")
    size = image.attrs.get("Size", 0) / 1e6
    return f"{tag} ({image.short_id.removeprefix('sha256:')}, {size:.0f} MB)"
