"""The image is built from the package's own files: the same from a checkout and an installation."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tomllib
from pathlib import Path

from helpers import ROOT
from packaging.requirements import Requirement

from qsandbox.launcher.engine import image

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_image_pins_are_pyprojects_sandbox_and_platform_extras():
    extras = PYPROJECT["project"]["optional-dependencies"]
    want = {str(Requirement(r)) for r in extras["sandbox"] + extras["platform"]}
    lines = (image.PACKAGE / "image" / "requirements.txt").read_text().splitlines()
    got = {str(Requirement(line)) for line in lines if line.strip() and not line.startswith("#")}
    assert got == want


def test_the_wheel_carries_the_package_data_the_build_context_takes():
    assert set(image.PACKAGE_DATA) <= set(PYPROJECT["tool"]["setuptools"]["package-data"]["qsandbox"])


def test_context_holds_every_module_and_the_dockerfile_at_its_path():
    with tarfile.open(fileobj=io.BytesIO(image.context_archive())) as archive:
        names = archive.getnames()
    modules = {f"qsandbox/{p.relative_to(image.PACKAGE).as_posix()}" for p in image.PACKAGE.rglob("*.py")}
    assert modules and modules <= set(names)
    assert image.DOCKERFILE in names and "qsandbox/image/requirements.txt" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".egg-info"))]


def test_context_depends_only_on_file_contents(tmp_path):
    """An installed copy (other mtimes and modes, bytecode caches beside it) gives the same bytes."""
    copy = tmp_path / "site-packages" / "qsandbox"
    shutil.copytree(image.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for path in copy.rglob("*"):
        os.utime(path, (1, 1))
        path.chmod(0o755 if path.is_dir() else 0o600)
    (copy / "launcher" / "__pycache__").mkdir()
    (copy / "launcher" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"x")
    assert image.context_archive(copy) == image.context_archive()
    (copy / "launcher" / "cli.py").write_text("changed\n")
    assert image.context_archive(copy) != image.context_archive()


def test_missing_package_data_is_named(tmp_path):
    copy = tmp_path / "qsandbox"
    shutil.copytree(image.PACKAGE, copy)
    (copy / "image" / "Dockerfile").unlink()
    try:
        image.context_archive(copy)
    except image.ImageError as e:
        assert str(e) == f"{copy / 'image' / 'Dockerfile'} is missing from the installed qsandbox: reinstall qsandbox"
    else:
        raise AssertionError("no error for a package without its Dockerfile")


def test_dockerfile_at_the_checkout_root_is_the_packaged_one():
    assert (ROOT / "Dockerfile").resolve() == (Path(image.PACKAGE) / "image" / "Dockerfile").resolve()
