"""The qsandbox installed in the image is exactly this checkout's src/qsandbox.

A stale build directory once installed the dependency layer's stub `__init__.py` (version "0"):
setuptools copies a file into build/lib only when the source is newer, and the stub was newer than
the real file. This compares every installed .py file with the checkout, by SHA-256, both ways.
"""

from __future__ import annotations

import hashlib
import json

from helpers import ROOT

import qsandbox

SOURCE = ROOT / "src" / "qsandbox"

# Runs inside the image: the installed package's version and a digest of each of its .py files.
LIST_INSTALLED = """
import hashlib, json, pathlib, qsandbox
root = pathlib.Path(qsandbox.__file__).parent
files = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.py")}
print(json.dumps({"version": qsandbox.__version__, "file": qsandbox.__file__, "files": files}))
"""


def checkout() -> dict[str, str]:
    return {
        p.relative_to(SOURCE).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in SOURCE.rglob("*.py")
        if "__pycache__" not in p.parts
    }


def installed(client, image: str) -> dict[str, object]:
    from qsandbox.launcher.core.settings import VENV_PYTHON

    out = client.containers.run(
        image,
        entrypoint=[VENV_PYTHON, "-c", LIST_INSTALLED],
        network_mode="none",
        read_only=True,
        cap_drop=["ALL"],
        remove=True,
    )
    return json.loads(out)


def differences(seen: dict[str, object]) -> list[str]:
    """Every way the installed package differs from the checkout, one line each."""
    want, got = checkout(), seen["files"]
    assert isinstance(got, dict)
    found = [f"version {seen['version']!r}, checkout {qsandbox.__version__!r}"] * (
        seen["version"] != qsandbox.__version__
    )
    for name in sorted(want.keys() | got.keys()):
        if name not in got:
            found.append(f"{name}: not installed")
        elif name not in want:
            found.append(f"{name}: installed, not in the checkout")
        elif got[name] != want[name]:
            found.append(f"{name}: contents differ")
    return found


def test_installed_qsandbox_is_exactly_the_checkout(image, docker_client):
    seen = installed(docker_client, image)
    assert str(seen["file"]).startswith("/opt/qsandbox/lib/")  # the venv's copy, not some other one
    assert len(checkout()) > 20  # the comparison covers the whole package
    found = differences(seen)
    assert found == [], (
        f"{image} does not hold this checkout's qsandbox (if src/ changed since the image was "
        f"built, run `qsandbox build`): {'; '.join(found)}"
    )
