"""The package docstrings and CONTRIBUTING's map name every module there is, so they cannot fall
behind the tree again (issue 26: they had left out batch, deps, egress, transfer and report)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from helpers import ROOT

SRC = ROOT / "src" / "qsandbox"
# Every package below qsandbox, sub-packages too (launcher/run, ...), by its dotted name below qsandbox.
PACKAGES = tuple(sorted(str(p.parent.relative_to(SRC)).replace("/", ".") for p in SRC.glob("*/**/__init__.py")))


def modules(package: str) -> list[str]:
    """Its modules and its sub-packages."""
    here = SRC / package.replace(".", "/")
    found = [p.stem for p in here.glob("*.py") if not p.name.startswith("__")]
    return sorted(found + [p.parent.name for p in here.glob("*/__init__.py")])


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_docstring_names_each_of_its_modules(package: str) -> None:
    doc = importlib.import_module(f"qsandbox.{package}").__doc__ or ""
    missing = [m for m in modules(package) if f"`{m}`" not in doc]
    assert missing == [], f"qsandbox/{package}/__init__.py's docstring does not name {missing}"


def test_contributing_names_each_module_where_it_runs() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    missing = [f"{p}/{m}" for p in PACKAGES for m in modules(p) if f"`{m}`" not in text]
    assert "launcher.run" in PACKAGES and "run" in modules("launcher") and "plans" in modules("launcher.run")
    assert missing == [], f"CONTRIBUTING.md's map does not name {missing}"


def test_the_check_finds_a_module_left_out(tmp_path: Path) -> None:
    """The control: a module the docstring does not name is found."""
    doc = importlib.import_module("qsandbox.launcher").__doc__ or ""
    assert "`no_such_module`" not in doc and "`run`" in doc
