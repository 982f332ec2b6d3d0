"""What a script needs beyond the sandbox image: PEP 723 inline metadata or --requirements, parsed
and checked as the user wrote them (engine/deps.py builds the derived image from them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# packaging and tomllib are imported where a script has needs: a run without any (most) does not pay
# for their regular expressions (about 40 ms of the launcher's CPU per run).
if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

from ...common.errors import UsageError
from ...common.text import shown

# PEP 723's reference implementation, verbatim: the block, then TOML.
PEP723_REGEX = r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$"


@dataclass(frozen=True)
class Needs:
    """What a script needs beyond the sandbox image, and where that was written."""

    requirements: tuple[Requirement, ...]
    requires_python: SpecifierSet | None
    source: str  # "fit.py (# /// script)" or "--requirements reqs.txt"

    def normalized(self) -> list[str]:
        """One line per requirement, names canonical, sorted and deduplicated: what names the image."""
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name

        lines = set()
        for req in self.requirements:
            copy = Requirement(str(req))
            copy.name = canonicalize_name(copy.name)
            lines.add(str(copy))
        return sorted(lines)


def read_pep723(script: str) -> dict[str, Any] | None:
    """The script's `# /// script` block as TOML, exactly as PEP 723's reference implementation reads it."""
    import tomllib

    name = "script"
    matches = [m for m in re.finditer(PEP723_REGEX, script) if m.group("type") == name]
    if len(matches) > 1:
        raise ValueError(f"Multiple {name} blocks found")
    if len(matches) == 1:
        content = "".join(
            line[2:] if line.startswith("# ") else line[1:]
            for line in matches[0].group("content").splitlines(keepends=True)
        )
        return tomllib.loads(content)
    return None


def _requirement(text: str, where: str) -> Requirement:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(text)
    except InvalidRequirement as e:
        raise UsageError(f"{where}: not a requirement: {text!r} ({e})") from None


def from_script(path: Path) -> Needs | None:
    """The PEP 723 metadata of a Python script, or None when it has none."""
    if path.suffix == ".ipynb":
        return None  # notebooks carry no PEP 723 block: --requirements serves them
    where = f"{shown(path.name)} (# /// script)"
    text = path.read_text(encoding="utf-8", errors="replace")
    if "# /// script" not in text:
        return None  # no block can match: nothing more to read, nothing to import
    import tomllib

    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        meta = read_pep723(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{where}: malformed inline metadata: {e}") from None
    if meta is None:
        return None
    deps, python = meta.get("dependencies", []), meta.get("requires-python")
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise UsageError(f"{where}: `dependencies` must be a list of strings (PEP 723)")
    if python is not None and not isinstance(python, str):
        raise UsageError(f"{where}: `requires-python` must be a string (PEP 723)")
    try:
        spec = SpecifierSet(python) if python is not None else None
    except InvalidSpecifier:
        raise UsageError(f"{where}: `requires-python` is not a version specifier: {python!r}") from None
    return Needs(tuple(_requirement(d, where) for d in deps), spec, where)


def from_requirements(path: Path) -> Needs:
    """A requirements file of PEP 508 lines (comments and blank lines allowed; no pip options)."""
    where = f"--requirements {shown(str(path))}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{where}: {e.strerror}") from None
    reqs = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            raise UsageError(
                f"{where}, line {number}: pip options ({line.split()[0]}) are not supported: list packages only"
            )
        reqs.append(_requirement(line, f"{where}, line {number}"))
    return Needs(tuple(reqs), None, where)


def for_script(script: Path, requirements: Path | None) -> Needs | None:
    """The script's needs from its inline metadata or --requirements (not both); None when it has none."""
    inline = from_script(script)
    if inline is not None and requirements is not None:
        raise UsageError(f"{inline.source} already declares dependencies: drop --requirements, or the block")
    needs = from_requirements(requirements) if requirements is not None else inline
    return needs if needs and (needs.requirements or needs.requires_python) else None
