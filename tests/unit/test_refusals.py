"""Refusals before anything starts exit 2 with their remedy; 125 is left to real failures.

The conditions behind these refusals (rootless on cgroup v1, host swap, Podman, a readback that
disagrees) cannot be produced by the engine on a test machine, so the engine's answers are faked
here; tests/docker/test_refusals_real_engine.py takes the cases a real engine can produce.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import requests.exceptions
import urllib3.exceptions
from click.testing import CliRunner

from qsandbox.common.errors import (
    EngineUnavailable,
    ExitCode,
    HardeningMismatch,
    ImageError,
    ImageMissing,
    PlatformNotRunning,
    PreflightRefused,
    SandboxError,
    UsageError,
)
from qsandbox.launcher.cli.commands import main
from qsandbox.launcher.core import credentials
from qsandbox.launcher.engine import client as engine
from qsandbox.launcher.engine import preflight, sandbox
from qsandbox.launcher.engine.client import EngineInfo

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "exit_with.py"
KEY = "k" * 44  # not a secret: nothing here gets as far as a sandbox

DOCKER = EngineInfo(kind="Docker", version="20.10", api_version="1.41", rootless=False, log_driver="none", debug=False)
ROOTLESS_V1 = EngineInfo(**{**DOCKER.__dict__, "kind": "rootless Docker", "rootless": True, "cgroup_version": "1"})
PODMAN = EngineInfo(**{**DOCKER.__dict__, "kind": "Podman", "podman": True})
SWAP_ON = preflight.Finding("host swap", "host swap is on (/swapfile): turn swap off (swapoff -a)", "on")
SWAP_OFF = preflight.Finding("host swap", None, "off")


def test_refusals_exit_2_and_failures_125():
    for refusal in (UsageError, PreflightRefused, HardeningMismatch, ImageMissing, PlatformNotRunning):
        assert refusal("x").exit_code == ExitCode.USAGE == 2, refusal
    for failure in (EngineUnavailable, SandboxError, ImageError):
        assert failure("x").exit_code == ExitCode.TOOL == 125, failure
    assert issubclass(ImageMissing, ImageError)  # `except ImageError` (the test fixtures) still catches it


class EngineThatMustNotBeUsed:
    """Answers nothing: a refusal must come before any call that would create something."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the engine was used ({name}) although the run should have been refused")


@pytest.fixture
def faked(monkeypatch):
    """`qsandbox run` against a fake engine of the given kind and preflight findings."""
    monkeypatch.setattr(credentials, "harden_process", lambda: None)  # not on the test process
    monkeypatch.setattr(engine, "connect", lambda timeout=120: EngineThatMustNotBeUsed())

    def invoke(info: EngineInfo, found: list[preflight.Finding], *args: str) -> tuple[int, str]:
        monkeypatch.setattr(engine, "describe", lambda _client: info)
        monkeypatch.setattr(preflight, "findings", lambda _info: found)
        r = CliRunner().invoke(main, ["run", *args, str(SCRIPT), "0"], input=KEY + "\n")
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        return r.exit_code, r.stderr

    return invoke


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_limits_the_engine_cannot_apply_are_a_refusal(faked):
    code, err = faked(ROOTLESS_V1, [SWAP_OFF], "--token-stdin")
    assert code == 2
    line = one_line(err)
    assert line.startswith("qsandbox: rootless Docker on cgroup v1 cannot apply memory, pids or CPU limits")
    assert "nothing was started" in line and "re-run with --allow-no-limits" in line


def test_no_limits_with_swap_on_is_a_refusal(faked):
    code, err = faked(ROOTLESS_V1, [SWAP_ON], "--token-stdin", "--allow-no-limits")
    assert code == 2
    line = one_line(err)
    assert line.startswith("qsandbox: --allow-no-limits is refused while host swap is on") and "swapoff -a" in line


def test_strict_with_a_warning_is_a_refusal(faked):
    code, err = faked(DOCKER, [SWAP_ON], "--token-stdin", "--strict")
    assert code == 2
    assert one_line(err) == "qsandbox: refused (--strict): host swap is on (/swapfile): turn swap off (swapoff -a)"


def test_emulator_on_podman_is_a_refusal(faked):
    code, err = faked(PODMAN, [SWAP_OFF], "--platform", "local")
    assert code == 2
    assert one_line(err) == "qsandbox: --platform local needs Docker Engine: on Podman use --platform ibm"


class FakeAPI:
    """Creates one container whose readback is missing every hardening option."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self.calls.append(f"inspect {container_id}")
        return {"HostConfig": {}, "Config": {}, "Mounts": []}

    def remove_container(self, container_id: str, force: bool, v: bool) -> None:
        self.calls.append(f"remove {container_id}")


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeAPI()


def test_hardening_mismatch_destroys_the_container_and_exits_2(monkeypatch):
    from qsandbox.launcher.cli.commands import _fail
    from qsandbox.launcher.core.settings import RunSettings

    class Created:
        id = "c0ffee"

    monkeypatch.setattr(sandbox, "create_container", lambda *_a, **_k: Created())
    client = FakeClient()
    with pytest.raises(HardeningMismatch) as raised:
        sandbox.create(client, RunSettings(script=SCRIPT), "run1")  # type: ignore[arg-type]
    assert client.api.calls == ["inspect c0ffee", "remove c0ffee"]  # gone before the refusal is raised
    assert str(raised.value).startswith("the engine did not apply the sandbox hardening, so no key was sent: user:")
    with pytest.raises(SystemExit) as exited:
        _fail(raised.value, debug=False)
    assert exited.value.code == 2


class ImagelessClient:
    class images:  # stands in for DockerClient.images
        @staticmethod
        def get(name: str) -> None:
            import docker.errors

            raise docker.errors.ImageNotFound(f"No such image: {name}")

        @staticmethod
        def list(name: str) -> list[object]:
            return []


def test_missing_image_is_a_refusal_in_run():
    from qsandbox.launcher.run import admission

    with pytest.raises(ImageMissing):
        admission.check_image(ImagelessClient(), "qsandbox:0.0.0-missing")  # type: ignore[arg-type]


def test_missing_image_is_a_refusal_in_check():
    from qsandbox.launcher.engine import image

    with pytest.raises(ImageMissing):
        image.check(ImagelessClient(), "qsandbox:0.0.0-missing")  # type: ignore[arg-type]


# -- an engine this user may not use -------------------------------------------------------------

HINT = (
    'run your own rootless engine (README: "Rootless Docker for each user") '
    "and point DOCKER_HOST or `docker context use` at it"
)


def sdk_permission_error() -> Exception:
    """What docker.from_env() raises when connect() on the socket fails with EACCES (seen as a user
    outside the docker group): the PermissionError sits in the args of a requests error."""
    import docker.errors

    denied = PermissionError(errno.EACCES, "Permission denied")
    aborted = urllib3.exceptions.ProtocolError("Connection aborted.", denied)
    try:
        try:
            raise requests.exceptions.ConnectionError(aborted)
        except requests.exceptions.ConnectionError as e:
            raise docker.errors.DockerException(f"Error while fetching server API version: {e}") from e
    except docker.errors.DockerException as e:
        return e


def test_target_follows_docker_host_then_context_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty docker config: the default context
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    assert engine.target({}) == ("the default socket /var/run/docker.sock", "/var/run/docker.sock")
    assert engine.target({"DOCKER_HOST": "unix:///run/user/1001/docker.sock"}) == (
        "unix:///run/user/1001/docker.sock",
        "/run/user/1001/docker.sock",
    )
    assert engine.target({"DOCKER_HOST": "tcp://10.0.0.1:2375"}) == ("tcp://10.0.0.1:2375", None)
    from docker.context import ContextAPI

    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text("{}")  # without one, docker-py keeps contexts in the cwd
    ContextAPI.create_context("mine", host="unix:///run/user/1001/docker.sock")
    mine = ("docker context mine (unix:///run/user/1001/docker.sock)", "/run/user/1001/docker.sock")
    assert engine.target({"DOCKER_CONTEXT": "mine"}) == mine
    (tmp_path / ".docker" / "config.json").write_text('{"currentContext": "mine"}')  # `docker context use mine`
    assert engine.target({}) == mine
    assert engine.target({"DOCKER_HOST": "unix:///x.sock"}) == ("unix:///x.sock", "/x.sock")  # DOCKER_HOST wins
    # preflight judges the engine the context names, not the default socket
    ContextAPI.create_context("remote", host="tcp://10.0.0.1:2375")
    monkeypatch.setenv("DOCKER_CONTEXT", "remote")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    (access,) = [f for f in preflight.findings(DOCKER) if f.name == "engine access"]
    assert access.detail.endswith("://10.0.0.1:2375") and "over the network" in (access.warning or "")


def test_permission_denied_is_told_apart_from_no_engine(tmp_path):
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    assert engine._denied(sdk_permission_error(), str(sock))
    assert not engine._denied(sdk_permission_error(), None)  # tcp: no socket to be denied
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert not engine._denied(requests.exceptions.ConnectionError(refused), str(sock))

    where = f"the default socket {sock}"
    assert engine.unreachable(where, str(sock), denied=True) == (
        f"the default socket {sock} exists but this user may not use it (permission denied): {HINT}"
    )
    closed = str(tmp_path / "closed" / "docker.sock")  # cannot be stat'ed: do not claim it exists
    assert engine.unreachable(closed, closed, denied=True) == (
        f"this user may not reach {closed} (permission denied): {HINT}"
    )
    assert engine.unreachable(where, str(sock), denied=False).startswith(
        f"no container engine answers at the default socket {sock}: start Docker"
    )


def test_connect_names_the_socket_it_may_not_use(monkeypatch):
    import docker

    def denied(**_kwargs: object) -> None:
        raise sdk_permission_error()

    monkeypatch.setattr(docker, "from_env", denied)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(engine, "target", lambda _env: ("the default socket /", "/"))  # "/" exists everywhere
    with pytest.raises(EngineUnavailable) as raised:
        engine.connect()
    assert str(raised.value) == f"the default socket / exists but this user may not use it (permission denied): {HINT}"
    assert raised.value.exit_code == 125
    assert os.path.exists("/")
