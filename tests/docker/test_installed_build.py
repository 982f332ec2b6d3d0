"""An installed qsandbox builds its own image, from any directory, and runs the Bell demo with it.

Built the way a user installs it (a wheel into a fresh venv, as pipx does), in an empty directory
with no checkout in sight; the image it builds is the checkout's, layer for layer (same image id),
so the build reuses the layer cache and tests and users share one image.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile

from helpers import ROOT


def sh(*cmd: str, cwd=None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QISKIT_IBM", "VIRTUAL_ENV", "PYTHON"))}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} exit {done.returncode}: {done.stderr[-2000:]}"
    return done


def test_sdist_carries_the_image_build(tmp_path):
    code = "import setuptools.build_meta as b, sys; print(b.build_sdist(sys.argv[1]))"
    name = sh(sys.executable, "-c", code, str(tmp_path), cwd=ROOT).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as archive:
        names = archive.getnames()
    top = name.removesuffix(".tar.gz")
    for needed in ("image/Dockerfile", "image/requirements.txt", "inside/entry.py", "py.typed"):
        assert f"{top}/src/qsandbox/{needed}" in names


def test_wheel_installed_in_a_fresh_venv_builds_the_same_image_and_runs_bell(docker_client, tmp_path):
    from qsandbox.launcher.engine import image, offlinebase

    # One snapshot of the checkout for both builds: others may edit the working tree meanwhile.
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    # The checkout's image, on the offline base (cached layers: seconds when nothing changed).
    offlinebase.ensure(docker_client, say=lambda _l: None)
    checkout_id = image.build(
        docker_client, base=offlinebase.OFFLINE_BASE, package=checkout / "src" / "qsandbox", say=lambda _l: None
    )

    wheels, venv, empty = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    empty.mkdir()
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), str(checkout))
    (wheel,) = wheels.glob("qsandbox-*.whl")
    sh(sys.executable, "-m", "venv", str(venv))
    sh(str(venv / "bin" / "pip"), "install", "-q", str(wheel))
    qsandbox = str(venv / "bin" / "qsandbox")
    # The installed package is not the checkout: it imports from the venv's site-packages.
    where = sh(str(venv / "bin" / "python"), "-c", "import qsandbox; print(qsandbox.__file__)", cwd=empty)
    assert where.stdout.startswith(str(venv / "lib"))

    built = sh(qsandbox, "build", "--offline-base", cwd=empty)
    short = re.search(r"qsandbox: built qsandbox:\S+ \(([0-9a-f]{12})\)", built.stderr)
    assert short, built.stderr[-500:]
    assert checkout_id.removeprefix("sha256:").startswith(short.group(1)), "the wheel built another image"
    # The checkout's layers, reused; how long that takes is bench/bench.py's `build_cached` step.
    assert "Using cache" in built.stderr, built.stderr[-2000:]

    shutil.copy(ROOT / "examples" / "bell.py", empty / "bell.py")
    ran = subprocess.run(
        [qsandbox, "run", "--platform", "local", "bell.py"], cwd=empty, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    counts = re.search(r'counts: \{"00": (\d+), "01": (\d+), "10": (\d+), "11": (\d+)\}', ran.stdout)
    assert counts, ran.stdout
    assert int(counts.group(1)) + int(counts.group(4)) > 800  # a Bell pair, with the backend's noise
