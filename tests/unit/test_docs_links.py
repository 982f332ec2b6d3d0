"""Every claim in the docs that names a test names one that exists, and every link resolves.

The README, CONTRIBUTING.md and docs/*.md cite tests as `tests/.../test_x.py`, as
`tests/.../test_x.py::test_name` and hostile scripts as `NAME.py`; each must be in the tree (a test
name as a function defined in that file). Relative links must name a file that exists and, with
`#anchor`, a heading of that file as GitHub and GitLab slug it. The client's own suite
(`test/integration/...` of qiskit-ibm-runtime) is not ours and is left out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])
CODE = re.compile(r"`([^`\n]+)`")
TEST_PATH = re.compile(r"(?<![\w/.])(tests/[\w/.*-]*\w)(?:::(\w+)(?:::(\w+))?)?")
PLACEHOLDER = re.compile(r"/[A-Z]+\.py$")  # `tests/hostile/NAME.py`: a pattern the text explains
SCRIPT_NAME = re.compile(r"^[\w-]+\.py$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _names(doc: Path) -> list[str]:
    return [m.group(1) for m in CODE.finditer(doc.read_text())]


def _slugs(doc: Path) -> set[str]:
    """Anchors of a Markdown file's headings, as GitHub makes them: lower case, punctuation but
    hyphens and underscores dropped, spaces to hyphens (fenced code is not headings)."""
    slugs = set()
    fenced = False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"#{1,6} (.+)", line)
        if m:
            slugs.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return slugs


def _defines(path: Path, name: str) -> bool:
    return re.search(rf"^\s*(?:async )?(?:def|class) {re.escape(name)}\b", path.read_text(), re.M) is not None


def test_the_docs_exist_and_cite_tests() -> None:
    """The check below is not empty: the docs are there and cite tests (a positive control)."""
    assert {p.name for p in DOCS} >= {
        "README.md",
        "security.md",
        "ci.md",
        "lab-admins.md",
        "emulator.md",
        "speed.md",
        "development.md",
        "usage.md",
    }
    cited = [n for doc in DOCS for n in _names(doc) if TEST_PATH.search(n)]
    assert len(cited) > 40


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_test_the_docs_name_exists(doc: Path) -> None:
    missing = []
    for text in _names(doc):
        for m in TEST_PATH.finditer(text):
            path, first, second = ROOT / m.group(1), m.group(2), m.group(3)
            if PLACEHOLDER.search(m.group(1)):
                continue
            if "*" in m.group(1):
                if not list(ROOT.glob(m.group(1))):
                    missing.append(f"{m.group(0)}: no file matches")
                continue
            if not path.exists():
                missing.append(f"{m.group(0)}: no such file")
            elif first and not _defines(path, first):
                missing.append(f"{m.group(0)}: {path.name} defines no {first}")
            elif second and not _defines(path, second):
                missing.append(f"{m.group(0)}: {path.name} defines no {second}")
        if SCRIPT_NAME.match(text) and not list(ROOT.glob(f"**/{text}")):
            missing.append(f"{text}: no such script in the tree")
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _slugs(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    assert broken == []


def test_the_checks_fail_what_they_must(tmp_path: Path) -> None:
    """Negative controls: a made-up test file, test name, script and anchor are each caught."""
    fake = tmp_path / "fake.md"
    fake.write_text(
        "# Title\n`tests/docker/test_nothing_here.py`, `tests/unit/test_reports.py::test_no_such`, `no_such.py`, "
        "`tests/unit/test_zz_*.py`\n"
    )
    found = [m.group(0) for n in _names(fake) for m in TEST_PATH.finditer(n)]
    assert found == [
        "tests/docker/test_nothing_here.py",
        "tests/unit/test_reports.py::test_no_such",
        "tests/unit/test_zz_*.py",
    ]
    assert not list(ROOT.glob(found[2]))
    assert not (ROOT / found[0]).exists()
    assert not _defines(ROOT / "tests/unit/test_reports.py", "test_no_such")
    assert _defines(ROOT / "tests/unit/test_reports.py", "test_ended_names")
    assert not list(ROOT.glob("**/no_such.py"))
    assert _slugs(fake) == {"title"} and "egress-where-the-key-can-go" in _slugs(ROOT / "docs" / "security.md")
