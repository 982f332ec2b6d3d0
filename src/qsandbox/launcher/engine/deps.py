"""A script's own dependencies: PEP 723 inline metadata or --requirements, as an image derived
FROM the sandbox image, built once per set of requirements and reused.

The sandbox image's pinned stack stays pinned: the image carries /opt/qsandbox/constraints.txt
(pip freeze of its venv, written at build time), a requirement that contradicts a pin is refused
before anything starts, and pip installs the rest under those constraints. The derived image keeps
the base's user, entry point, labels and read-only-root readiness (bytecode compiled at build).

A tag is a name anyone with access to the engine can give any image, and a derived image's code
runs in the entry point, the process that receives the key. So a derived image is reused only when
the tag still names the very image (its id) this user's qsandbox recorded when it built it, in the
user's cache, and its labels (qsandbox.version, the base's id, the requirements) and its entry
point, command, user, environment and working directory still match; anything else is built again,
without the engine's build cache (whose steps anyone could have seeded), and a tag that pointed
elsewhere is named. The run then uses the image by its id, so a tag moved later changes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import docker
import docker.errors

from ... import __version__
from ...common.errors import ImageError, UsageError
from ...common.text import shown
from ..core.needs import Needs
from ..core.settings import IMAGE_REPOSITORY, VERSION_LABEL, module_entrypoint
from . import image

if TYPE_CHECKING:
    from packaging.requirements import Requirement

DERIVED_REPOSITORY = f"{IMAGE_REPOSITORY}-deps"
DERIVED_LABEL = "qsandbox.derived-from"  # the base image's id
REQUIREMENTS_LABEL = "qsandbox.requirements"
CONSTRAINTS = "/opt/qsandbox/constraints.txt"  # written by the Dockerfile: pip freeze of the venv
VENV = "/opt/qsandbox"
ENTRY_MODULE = "qsandbox.inside.entry"
# What a derived image must keep of its base: anything else there could run code before the script.
KEPT_CONFIG = ("Entrypoint", "Cmd", "User", "Env", "WorkingDir")


class DependencyConflict(UsageError):
    """Raised before anything starts when a script's requirements contradict the image's pinned
    stack or its Python; trying again unchanged gives the same answer (exit 2)."""


# -- the image's pins --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pins:
    """The base image's pinned stack (its constraints.txt) and its Python version."""

    python: str
    versions: dict[str, str]  # canonical name -> pinned version


def parse_constraints(text: str) -> Pins:
    from packaging.utils import canonicalize_name  # a script with needs only (core/needs.py)

    python, versions = "", dict[str, str]()
    for line in text.splitlines():
        if line.startswith("# python "):
            python = line.removeprefix("# python ").strip()
        elif "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            versions[canonicalize_name(name.strip())] = version.strip()
    return Pins(python, versions)


def read_pins(client: docker.DockerClient, base: str) -> Pins:
    """Read constraints.txt out of the image: a container is created, never started, and removed."""
    try:
        container = client.containers.create(base, network_disabled=True)
    except docker.errors.APIError as e:
        raise ImageError(f"cannot read the pins of {base}: {e.explanation}") from e
    try:
        chunks, _ = container.get_archive(CONSTRAINTS)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(tar.getmembers()[0])
            text = member.read().decode() if member else ""
    except docker.errors.NotFound:
        raise ImageError(f"{base} has no {CONSTRAINTS}: rebuild it with `qsandbox build`") from None
    finally:
        container.remove(force=True)
    return parse_constraints(text)


def check(needs: Needs, pins: Pins) -> list[Requirement]:
    """Refuse what contradicts the pins or the image's Python; return the requirements to install."""
    from packaging.utils import canonicalize_name

    env = {"python_version": ".".join(pins.python.split(".")[:2]), "python_full_version": pins.python}
    if needs.requires_python is not None and pins.python and not needs.requires_python.contains(pins.python, True):
        raise DependencyConflict(
            f"{needs.source} requires Python {needs.requires_python}; the sandbox image has {pins.python}: "
            "change requires-python, or build the image on another base (`qsandbox build --base-image ...`)"
        )
    wanted = []
    for req in needs.requirements:
        if req.marker is not None and not req.marker.evaluate(env):
            continue  # not for the image's Python
        pinned = pins.versions.get(canonicalize_name(req.name))
        if pinned is not None and (req.url or not req.specifier.contains(pinned, prereleases=True)):
            raise DependencyConflict(
                f"{needs.source}: {req} conflicts with the sandbox image's pinned {req.name}=={pinned} "
                "(the Qiskit stack stays as built): relax or drop that requirement"
            )
        wanted.append(req)
    return wanted


# -- the derived image -------------------------------------------------------------------------


def derived_tag(base_id: str, lines: Iterable[str]) -> str:
    """qsandbox-deps:VERSION-HASH, the hash over this version, the base image and the requirements."""
    digest = hashlib.sha256("\n".join([__version__, base_id, *lines]).encode()).hexdigest()
    return f"{DERIVED_REPOSITORY}:{__version__}-{digest[:16]}"


def _dockerfile(base_id: str, user: str) -> str:
    return f"""\
FROM {base_id}
USER 0:0
COPY requirements.txt {VENV}/script-requirements.txt
# Under the base's constraints: the pinned stack cannot move. Compiled here, as the base is: the
# sandbox's root file system is read-only, so nothing could be cached at run time.
RUN PIP_ROOT_USER_ACTION=ignore {VENV}/bin/pip install --no-compile -c {CONSTRAINTS} \\
      -r {VENV}/script-requirements.txt \\
 && {VENV}/bin/python -m compileall -q -j 0 {VENV} >/dev/null
USER {user}
"""


def _context(base_id: str, user: str, lines: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", _dockerfile(base_id, user)), ("requirements.txt", "\n".join(lines) + "\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data.encode()), 0o644
            tar.addfile(info, io.BytesIO(data.encode()))
    return buf.getvalue()


_locks_lock = threading.Lock()
_tag_locks: dict[str, threading.Lock] = {}  # one build of a tag at a time in this process (a batch's runs)


def ensure_image(client: docker.DockerClient, base: str, needs: Needs, say: Callable[[str], None]) -> str:
    """The id of the derived image for these needs on `base`: reused when this user's qsandbox built
    it and it is unchanged, else built now, with progress. An id, not the tag: what was checked is
    what runs. `base` itself is returned when nothing needs installing.

    Raises DependencyConflict (exit 2) when the needs contradict the base's pins, before any build.
    """
    base_image = client.images.get(base)
    base_id = cast(str, base_image.id)
    wanted = check(needs, read_pins(client, base))
    lines = sorted({line for line in Needs(tuple(wanted), None, needs.source).normalized()})
    if not lines:
        record_use(base)
        return base
    tag = derived_tag(base_id, lines)
    with _locks_lock:
        lock = _tag_locks.setdefault(tag, threading.Lock())
    with lock:
        found, why = _reusable(client, tag, base_image, lines)
        if found is not None:
            say(f"dependencies of {needs.source}: reusing {tag}")
            record_use(tag)
            return found
        if why:
            not_ours = f"{tag} on this engine is not one qsandbox built for you ({why}): not used"
            say(f"dependencies of {needs.source}: {not_ours}")
        image_id = _build(client, tag, base_image, lines, needs, say)
        problem = _differs(client.images.get(image_id), base_image, lines)
        if problem:
            raise ImageError(f"the image just built as {tag} ({_short(image_id)}) is not as built: {problem}")
        _record_built(tag, image_id)
    record_use(tag)
    return image_id


def _short(image_id: str) -> str:
    return shown(image_id.removeprefix("sha256:")[:12])


def _reusable(client: docker.DockerClient, tag: str, base_image: Any, lines: list[str]) -> tuple[str | None, str]:
    """(the id of the image to reuse, '') or (None, why the image now tagged `tag` is not reused;
    '' when there is none)."""
    try:
        found = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None, ""
    found_id = cast(str, found.id)
    records, problem = _read_records()
    if problem:
        return None, f"the record of the images it built, {problem}, is not trusted"
    recorded = records.get(tag)
    if recorded is None:
        return None, f"the tag names image {_short(found_id)}, and qsandbox has no record of building it"
    if recorded != found_id:
        return None, f"the tag now names image {_short(found_id)}, not {_short(recorded)}, which qsandbox built"
    problem = _differs(found, base_image, lines)
    if problem:
        return None, problem
    return found_id, ""


def _differs(found: Any, base_image: Any, lines: list[str]) -> str:
    """'' when `found` carries the labels of a derived image of `base_image` for `lines` and keeps the
    base's entry point (qsandbox's own), command, user, environment and working directory; else what
    differs (values the image chose are shown escaped)."""
    labels = found.labels or {}
    want = {
        VERSION_LABEL: __version__,
        DERIVED_LABEL: cast(str, base_image.id),
        REQUIREMENTS_LABEL: "\n".join(lines),
    }
    for label, value in want.items():
        if labels.get(label) != value:
            return f"its {label} label is {shown(repr(labels.get(label)))}, not {shown(repr(value))}"
    config = found.attrs.get("Config") or {}
    base_config = base_image.attrs.get("Config") or {}
    entry = module_entrypoint(ENTRY_MODULE)
    if config.get("Entrypoint") != entry:
        return f"its entry point is {shown(repr(config.get('Entrypoint')))}, not qsandbox's {entry}"
    for key in KEPT_CONFIG:
        if config.get(key) != base_config.get(key):
            return (
                f"its {key} is {shown(repr(config.get(key)))}, not the base image's {shown(repr(base_config.get(key)))}"
            )
    return ""


def _build(
    client: docker.DockerClient, tag: str, base_image: Any, lines: list[str], needs: Needs, say: Callable[[str], None]
) -> str:
    base_id = cast(str, base_image.id)
    say(f"dependencies of {needs.source}: building {tag} ({', '.join(lines)}), once")
    log: list[str] = []

    def progress(line: str) -> None:
        log.append(line)
        if not line.startswith(("--->", "Removing intermediate", " ---> ")):  # the builder's bookkeeping
            say(f"  {line}")

    user = base_image.attrs.get("Config", {}).get("User") or "root"
    try:
        return image.stream_build(
            client,
            progress,
            _context(base_id, user, lines),
            dockerfile="Dockerfile",
            tag=tag,
            labels={DERIVED_LABEL: base_id, REQUIREMENTS_LABEL: "\n".join(lines)},
            nocache=True,  # the engine's cache keys a step on its text: anyone could have seeded it
        )
    except ImageError as e:
        text = "\n".join(log)
        if "ResolutionImpossible" in text or "conflict" in text.lower():
            cause = next((x.strip() for x in log if "conflict" in x.lower() or "requires" in x), "")
            raise DependencyConflict(
                f"{needs.source}: pip cannot satisfy these requirements under the sandbox image's pins "
                f"({cause or e}): relax or drop the conflicting requirement"
            ) from None
        raise


# -- what this user's qsandbox built --------------------------------------------------------------

_records_file_lock = threading.Lock()


def _records_file() -> Path:
    return _state_file().with_name("derived-images.json")


def _unsafe(st: os.stat_result, what: Path) -> str:
    if st.st_uid != os.geteuid():
        return f"{shown(str(what))} (owned by uid {st.st_uid}, not by you)"
    if st.st_mode & 0o022:
        return f"{shown(str(what))} (writable by group or others: mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def _load_records() -> tuple[dict[str, Any], str]:
    """The record as saved, and '' or why it is not trusted (not a regular file of the user's own
    in a directory of the user's own, or writable by another account)."""
    path = _records_file()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}, ""
    except OSError as e:
        return {}, f"{shown(str(path))} ({e.strerror})"
    with os.fdopen(fd, "rb") as f:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return {}, f"{shown(str(path))} (not a regular file)"
            problem = _unsafe(st, path) or _unsafe(os.stat(path.parent), path.parent)
            if problem:
                return {}, problem
            data = json.loads(f.read(1 << 22))
        except OSError as e:
            return {}, f"{shown(str(path))} ({e.strerror})"
        except ValueError:
            return {}, f"{shown(str(path))} (not JSON)"
    if not isinstance(data, dict):
        return {}, f"{shown(str(path))} (not a record of images)"
    return data, ""


def _read_records() -> tuple[dict[str, str], str]:
    """{tag: image id} of the derived images this user's qsandbox built, and '' or why the record
    is not trusted."""
    data, problem = _load_records()
    return {k: v["id"] for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("id"), str)}, problem


def _write_records(change: Callable[[dict[str, Any]], None]) -> None:
    """Apply `change` to the record and save it: a file of the user's own, mode 0600, in a directory
    no other account can write (made so if it is the user's). A record not trusted starts afresh."""
    path = _records_file()
    with _records_file_lock:
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            st = os.stat(path.parent)
            if st.st_uid == os.geteuid() and st.st_mode & 0o022:
                os.chmod(path.parent, stat.S_IMODE(st.st_mode) & ~0o022)
            data, problem = _load_records()
            data = {} if problem else data
            change(data)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError:  # without the record, the image is built again next time: never a reason to fail
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def _record_built(tag: str, image_id: str) -> None:
    def change(data: dict[str, Any]) -> None:
        data[tag] = {"id": image_id, "built": time.time()}

    _write_records(change)


def _forget_built(tag: str) -> None:
    def change(data: dict[str, Any]) -> None:
        data.pop(tag, None)

    _write_records(change)


# -- last use, and the list ---------------------------------------------------------------------


def _state_file() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "qsandbox" / "last-used.json"


def _last_uses() -> dict[str, float]:
    try:
        data = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save(uses: dict[str, float]) -> None:
    path = _state_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # a batch runs threads
        tmp.write_text(json.dumps(uses, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # a record of last use is a convenience: never a reason to fail a run


def record_use(tag: str, when: float | None = None) -> None:
    """Note that `tag` was used now (a state file under the user's cache directory; labels cannot change)."""
    uses = _last_uses()
    uses[tag] = time.time() if when is None else when
    _save(uses)


@dataclass(frozen=True)
class Listed:
    tag: str
    kind: str  # "base" or "derived"
    size: int
    created: str
    last_used: float | None
    requirements: str


def listing(client: docker.DockerClient) -> list[Listed]:
    """Base images (qsandbox:VERSION) and derived ones, with size and last use."""
    uses, found = _last_uses(), []
    for img in client.images.list(filters={"label": VERSION_LABEL}):
        labels = img.labels or {}
        kind = "derived" if DERIVED_LABEL in labels else "base"
        for tag in img.tags or []:
            if kind == "derived" or tag.startswith(f"{IMAGE_REPOSITORY}:"):
                created = str(img.attrs.get("Created", ""))[:19].replace("T", " ")
                reqs = labels.get(REQUIREMENTS_LABEL, "").replace("\n", ", ")
                found.append(Listed(tag, kind, int(img.attrs.get("Size", 0)), created, uses.get(tag), reqs))
    return sorted(found, key=lambda x: (x.kind != "base", x.tag))


def prune(client: docker.DockerClient, *, days: float | None, say: Callable[[str], None]) -> int:
    """Remove derived images not used for `days` (None: all of them); return how many were removed."""
    uses, removed, now = _last_uses(), 0, time.time()
    for item in listing(client):
        if item.kind != "derived":
            continue
        last = item.last_used
        if last is None:
            created = client.images.get(item.tag).attrs.get("Created", "")
            last = time.mktime(time.strptime(str(created)[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        if days is not None and now - last < days * 86400:
            continue
        try:
            client.images.remove(item.tag)
        except docker.errors.APIError as e:
            say(f"kept {item.tag}: {e.explanation}")
            continue
        uses.pop(item.tag, None)
        _forget_built(item.tag)
        removed += 1
        say(f"removed {item.tag}")
    _save(uses)
    return removed
