"""Preflight and doctor on a remote engine: checks of the engine's host are said to be not checked,
one line each, never passed as fine; and the launcher's own connection settings for remote engines.

The real remote engines (ssh in both modes, mutual TLS) are in tests/docker/test_remote_engines.py.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from qsandbox.common.errors import EngineUnavailable, PreflightRefused
from qsandbox.launcher.checks import doctor
from qsandbox.launcher.core.settings import RunSettings
from qsandbox.launcher.engine import client as engine
from qsandbox.launcher.engine import preflight
from qsandbox.launcher.engine.client import EngineInfo
from qsandbox.launcher.run import admission

DOCKER = EngineInfo(kind="Docker", version="20.10", api_version="1.41", rootless=False, log_driver="none", debug=False)
ROOTLESS_V1 = replace(DOCKER, kind="rootless Docker", rootless=True, cgroup_version="1")
SSH = "ssh://ci@build-host.example"
TLS = {"DOCKER_HOST": "tcp://10.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/certs"}


def by_name(found: list[preflight.Finding]) -> dict[str, preflight.Finding]:
    names = [f.name for f in found]
    assert len(names) == len(set(names)), names  # one line each
    return {f.name: f for f in found}


@pytest.mark.parametrize("env", [{"DOCKER_HOST": SSH}, TLS], ids=["ssh", "tcp+tls"])
def test_a_remote_engines_host_checks_are_said_not_checked(env):
    url = env["DOCKER_HOST"]
    found = by_name(preflight.findings(DOCKER, env))
    for name in ("engine host swap", "engine access"):
        f = found[name]
        assert not f.checked and f.warning is None, f
        assert f.detail.startswith(f"not checked: the engine runs on another host ({url})"), f.detail
        assert f.unchecked == f"{name}: {f.detail}"
    # This machine's swap is still checked: the launcher holds the key in its own memory.
    assert found["host swap"].checked and "this machine" in found["host swap"].detail
    assert found["engine debug"].checked  # asked of the engine through its API: works remotely


def test_a_local_engine_has_no_unchecked_findings(tmp_path):
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    sock.chmod(0o660)
    found = by_name(preflight.findings(DOCKER, {"DOCKER_HOST": f"unix://{sock}"}))
    assert "engine host swap" not in found  # the host swap check is the engine host's too
    assert all(f.checked and f.unchecked is None for f in found.values())
    assert found["engine access"].detail.startswith(str(sock))
    assert "this machine" not in found["host swap"].detail


def test_tcp_without_tls_is_a_warning_not_a_skip():
    access = by_name(preflight.findings(DOCKER, {"DOCKER_HOST": "tcp://10.0.0.1:2375"}))["engine access"]
    assert access.checked and "over the network" in (access.warning or "")
    # DOCKER_CERT_PATH alone turns TLS on, as in docker-py and the docker CLI
    tls = by_name(preflight.findings(DOCKER, {"DOCKER_HOST": "tcp://h:2376", "DOCKER_CERT_PATH": "/c"}))
    assert not tls["engine access"].checked


def test_doctor_prints_not_checked_as_neither_ok_nor_warn():
    skipped = doctor.Check("engine host swap", True, "not checked: the engine runs on another host (ssh://h)")
    assert replace(skipped, checked=False).line() == (
        "n/a  engine host swap: not checked: the engine runs on another host (ssh://h)"
    )
    assert skipped.line().startswith("ok   ")


def test_doctor_carries_unchecked_findings_through(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", SSH)
    monkeypatch.setattr(engine, "connect", lambda timeout=120: object())
    monkeypatch.setattr(engine, "describe", lambda _client: DOCKER)
    monkeypatch.setattr(doctor.image, "check", lambda _client: (_ for _ in ()).throw(EngineUnavailable("stop here")))
    lines: list[str] = []
    doctor.checks(lambda c: lines.append(c.line()))
    assert (
        f"n/a  engine host swap: not checked: the engine runs on another host ({SSH}), where swap cannot be seen"
        in (lines)
    )
    assert any(line.startswith("n/a  engine access: not checked") for line in lines)
    assert not any("engine host swap" in line and line.startswith("ok") for line in lines)


def _settings(tmp_path: Path, **kw: Any) -> RunSettings:
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    return RunSettings(script=script, args=(), **kw)


def test_run_says_what_it_did_not_check(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", SSH)
    monkeypatch.setattr(engine, "describe", lambda _client: DOCKER)
    err = io.BytesIO()
    admission.fit(object(), _settings(tmp_path), err)  # type: ignore[arg-type]
    lines = err.getvalue().decode().splitlines()
    assert (
        f"qsandbox: engine host swap: not checked: the engine runs on another host ({SSH}), where swap cannot be seen"
        in (lines)
    )
    assert sum(line.startswith("qsandbox: engine access: not checked") for line in lines) == 1


def test_no_limits_on_a_remote_engine_is_refused(monkeypatch, tmp_path):
    """Without a memory limit the tmpfs could be swapped on the engine's host, which cannot be checked."""
    monkeypatch.setenv("DOCKER_HOST", SSH)
    monkeypatch.setattr(engine, "describe", lambda _client: ROOTLESS_V1)
    with pytest.raises(PreflightRefused, match="--allow-no-limits is refused on a remote engine"):
        admission.fit(object(), _settings(tmp_path, allow_no_limits=True), io.BytesIO())  # type: ignore[arg-type]
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")  # the same engine, local: allowed
    admission.fit(object(), _settings(tmp_path, allow_no_limits=True), io.BytesIO())  # type: ignore[arg-type]


def test_ssh_client_mode_is_the_default_and_paramiko_is_chosen_by_env():
    assert engine.ssh_client_mode({})  # the `ssh` command, as the docker CLI
    assert engine.ssh_client_mode({"QSANDBOX_SSH_CLIENT": "1"})
    assert not engine.ssh_client_mode({"QSANDBOX_SSH_CLIENT": "0"})
    assert not engine.ssh_client_mode({"QSANDBOX_SSH_CLIENT": "false"})


def test_the_launcher_does_not_import_paramiko_unless_it_is_used():
    """0.12 s of every run's CPU: docker-py imports it for ssh://, the stand-in defers it."""
    import subprocess
    import sys

    probe = (
        "import sys, qsandbox.launcher.cli.commands, qsandbox.launcher.run.run, docker;"
        "print(type(sys.modules['paramiko']).__name__, 'paramiko.client' in sys.modules);"
        "from docker.transport.sshconn import paramiko;"
        "paramiko.SSHClient;"
        "print('paramiko.client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["module", "False", "True"]  # not loaded by the imports; loaded at first use


def test_connect_passes_ssh_client_mode_and_says_why_ssh_failed(monkeypatch):
    import docker

    seen: dict[str, Any] = {}

    class AuthenticationException(Exception):  # paramiko's, as the SDK lets it through
        __module__ = "paramiko.ssh_exception"

    def from_env(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise AuthenticationException("Authentication failed.")

    monkeypatch.setattr(docker, "from_env", from_env)
    monkeypatch.setenv("DOCKER_HOST", SSH)
    monkeypatch.setenv("QSANDBOX_SSH_CLIENT", "1")
    with pytest.raises(EngineUnavailable) as raised:
        engine.connect()
    assert seen["use_ssh_client"] is True
    assert str(raised.value) == f"no container engine answers at {SSH}: Authentication failed."
    assert "\n" not in str(raised.value)


def test_connect_without_paramiko_names_the_extra(monkeypatch):
    import docker

    def from_env(**_kwargs: Any) -> None:
        raise docker.errors.DockerException("Install paramiko package to enable ssh:// support")

    monkeypatch.setattr(docker, "from_env", from_env)
    monkeypatch.setenv("DOCKER_HOST", SSH)
    monkeypatch.setenv("QSANDBOX_SSH_CLIENT", "0")
    needs = r"QSANDBOX_SSH_CLIENT=0 needs paramiko: pip install 'qsandbox\[paramiko\]'"
    with pytest.raises(EngineUnavailable, match=needs):
        engine.connect()


def test_tls_ca_is_not_replaced_by_requests_ca_bundle(monkeypatch):
    """requests lets REQUESTS_CA_BUNDLE replace a session's CA per request; the engine's must stay."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    session = requests.Session()
    session.verify = "/certs/ca.pem"
    url = "https://10.0.0.1:2376/version"
    assert session.merge_environment_settings(url, {}, None, None, None)["verify"] != "/certs/ca.pem"  # the trap
    engine._pin_tls(session)  # type: ignore[arg-type]
    assert session.merge_environment_settings(url, {}, None, None, None)["verify"] == "/certs/ca.pem"
    plain = requests.Session()  # no TLS settings: left alone
    engine._pin_tls(plain)  # type: ignore[arg-type]
    assert plain.merge_environment_settings(url, {}, None, None, None)["verify"] == "/etc/ssl/certs/ca-certificates.crt"
