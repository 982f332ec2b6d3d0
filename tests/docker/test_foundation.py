"""Image, doctor and the one-line errors of the foundation, against a real engine."""

from __future__ import annotations

import pytest
from helpers import qsandbox


def test_doctor_is_all_green(image):
    done = qsandbox("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    names = [line.split(":")[0].split(maxsplit=1)[1] for line in lines]
    assert names == [
        "engine",
        "host swap",
        "engine debug",
        "engine access",
        "sandbox uid",
        "image",
        "non-root",
        "capabilities",
        "no-new-privileges",
        "read-only root",
        "no core dumps",
        "resource limits",
        "account tmpfs",
        "key tmpfs",
    ]
    preflight = ("host swap", "engine debug", "engine access")
    assert all(
        line.startswith("ok") or (line.startswith("warn") and name in preflight)
        for line, name in zip(lines, names, strict=True)
    ), done.stdout


def test_probe_reports_hardening_from_inside(image, docker_client):
    from qsandbox.launcher.checks.doctor import probe
    from qsandbox.launcher.core.settings import Hardening

    hardening = Hardening()
    seen = probe(docker_client, hardening)
    assert seen["uid"] == hardening.uid != 0
    assert seen["cap_eff"] == 0 and seen["cap_bnd"] == 0
    assert seen["no_new_privs"] is True
    assert seen["root_read_only"] is True
    assert seen["core_limit"] == [0, 0]
    for key in ("qiskit_dir", "secret_dir"):
        info = seen[key]
        assert isinstance(info, dict)
        assert info["mount"]["fstype"] == "tmpfs"
        assert {"noexec", "nosuid", "nodev"} <= set(info["mount"]["options"])
        assert info["mode"] == "0o700" and info["owner"] == hardening.uid
        assert info["size"] == 64 << 10


def test_missing_engine_is_one_line_with_remedy():
    done = qsandbox("doctor", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert done.returncode == 1
    assert done.stdout.startswith("FAIL engine: no container engine answers at unix:///nonexistent/docker.sock")
    done = qsandbox(
        "run", "--token-stdin", __file__, input="x" * 44 + "\n", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    assert done.returncode == 125
    assert len(done.stderr.strip().splitlines()) == 1 and "start Docker" in done.stderr


def test_unpullable_base_is_one_line_with_remedy(docker_client):
    done = qsandbox("build", "--base-image", "registry.invalid/none/python:0")
    assert done.returncode == 125
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("qsandbox: cannot pull base image registry.invalid/none/python:0")
    assert "qsandbox build --offline-base" in last


def test_outdated_image_is_reported(image, docker_client):
    from qsandbox.common.errors import ImageError
    from qsandbox.launcher.engine import image as image_mod

    outdated = r"image qsandbox:99\.0\.0 missing; only outdated .*qsandbox:0\.1\.0.*run `qsandbox build`"
    with pytest.raises(ImageError, match=outdated):
        image_mod.check(docker_client, tag="qsandbox:99.0.0")


def test_image_history_holds_nothing_surprising(image, docker_client):
    history = docker_client.api.history(image)
    text = " ".join(h.get("CreatedBy", "") for h in history).lower()
    for word in ("token", "apikey", "api_key", "secret", "password"):
        assert word not in text
    config = docker_client.api.inspect_image(image)["Config"]
    assert config["User"] == "10001:10001"
    assert not any(k.startswith("QISKIT_IBM_TOKEN=") for k in config.get("Env") or [])
