"""`qsandbox run` on engines reached other than through the local socket: a real sshd on loopback
(DOCKER_HOST=ssh://, with paramiko and with the ssh command), mutual TLS (DOCKER_HOST=tcp://,
DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), and the launcher in a CI job container that has only the
engine's socket (GitLab's socket binding), whose own filesystem alone holds the script and --output.

Each of them is the same engine as the other tests', so the canary leak search covers it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT, qsandbox

SSHD = "/usr/sbin/sshd"
SCRIPT = """\
import pathlib, sys
pathlib.Path("/output/result.txt").write_text("made in the sandbox: " + sys.argv[1] + "\\n")
print("script ran", sys.argv[1])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} is not listening on {port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Sshd:
    url: str
    port: int
    home: Path  # HOME for paramiko: ~/.ssh/config names the key, ~/.ssh/known_hosts the host key
    bin: Path  # an `ssh` first on PATH for the ssh command mode: the same settings, with -F


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    """A real OpenSSH server on a free loopback port, logging in root with a key made here."""
    if not os.path.exists(SSHD):
        if os.environ.get("CI"):
            raise AssertionError(f"{SSHD} is missing: scripts/setup.sh installs openssh-server")
        pytest.skip("no sshd (apt-get install openssh-server, or run scripts/setup.sh)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    port = _free_port()
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PidFile {d / 'sshd.pid'}\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege-separation directory
    with open(d / "sshd.log", "wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=log)
    try:
        _wait_listening(port, proc, "sshd")
        home = d / "home"
        (home / ".ssh").mkdir(parents=True)
        host_key = " ".join((d / "host_key.pub").read_text().split()[:2])
        (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
        (home / ".ssh" / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {d / 'client_key'}\n")
        (d / "ssh_config").write_text(
            f"Host 127.0.0.1\n  IdentityFile {d / 'client_key'}\n  IdentitiesOnly yes\n  BatchMode yes\n"
            f"  UserKnownHostsFile {home / '.ssh' / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        )
        bin_dir = d / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {d / "ssh_config"} "$@"\n')
        wrapper.chmod(0o755)
        yield Sshd(url=f"ssh://root@127.0.0.1:{port}", port=port, home=home, bin=bin_dir)
    finally:
        _stop(proc)


def _remote_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "QSANDBOX_SSH"))}
    env.pop("SSH_AUTH_SOCK", None)  # only the key made here
    env.update(extra)
    return env


def _run_remote(tmp_path: Path, canary: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], str]:
    word = secrets.token_hex(6)
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    done = qsandbox(
        "run",
        "--platform",
        "local",
        "--token-stdin",
        "--output",
        str(out),
        str(script),
        word,
        input=canary + "\n",
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert f"script ran {word}" in done.stdout
    assert (out / "result.txt").read_text() == f"made in the sandbox: {word}\n"
    assert "container and secret destroyed (engine confirms)" in done.stderr
    return done, word


def _not_checked_lines(stderr: str, url: str) -> list[str]:
    prefix = f"not checked: the engine runs on another host ({url})"
    return [line for line in stderr.splitlines() if prefix in line]


@pytest.mark.parametrize("mode", ["paramiko", "ssh-client"])
def test_run_over_ssh(image, canary, leak_search, sshd, tmp_path, mode):
    env = _remote_env(DOCKER_HOST=sshd.url, HOME=str(sshd.home))
    if mode == "ssh-client":  # the default
        env.update(PATH=f"{sshd.bin}:{env['PATH']}")
    else:
        env.update(QSANDBOX_SSH_CLIENT="0")
    done, _ = _run_remote(tmp_path, canary, env)
    _relay_roundtrip(env, tmp_path, canary)
    said = _not_checked_lines(done.stderr, sshd.url)
    assert [line.split(":")[1].strip() for line in said] == [
        "engine access",
        "sandbox uid",
        "engine host swap",
    ], done.stderr
    if mode == "ssh-client":  # every request was an ssh process of the launcher's: none may outlive it
        end = time.monotonic() + 10
        while _ssh_processes(sshd.port) and time.monotonic() < end:
            time.sleep(0.2)
        assert _ssh_processes(sshd.port) == []
    assert leak_search.all_hits() == []


class _LineServer:
    """A listener on the launcher's machine (127.0.0.1) that answers each line with `heard: LINE`,
    standing in for an IBM host: a sandbox on a remote engine reaches it only through the relay."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:
                line = f.readline()
                f.write(b"heard: " + line)
                f.flush()

    def close(self) -> None:
        self.sock.close()


def _relay_roundtrip(env: dict[str, str], tmp_path: Path, canary: str) -> None:
    """--platform ibm on this engine: the sandbox has no network; an --allow-host name answers from
    the launcher's own loopback through the relay (so, over the engine's attach stream), a name not
    allowed is refused."""
    server = _LineServer()
    word = secrets.token_hex(6)
    try:
        for host, expected in (("allowed.test", f"answer: heard: ping {word}"), ("other.test", "403 Forbidden")):
            done = qsandbox(
                "run",
                "--token-stdin",
                "--allow-host",
                "allowed.test",
                "--connect-to",
                f"allowed.test:443:127.0.0.1:{server.port}",
                str(ROOT / "tests" / "scripts" / "relay_roundtrip.py"),
                f"{host}:443",
                word,
                input=canary + "\n",
                env=env,
                timeout=240,
            )
            assert done.returncode == 0, done.stderr
            assert expected in done.stdout, done.stdout
        assert "egress refused: other.test:443" in done.stderr
    finally:
        server.close()


def test_an_audit_over_ssh_marks_the_engine_hosts_places_not_searched(image, sshd):
    """What an audit on this machine cannot prove of an ssh:// engine's host: its data root,
    runtime state, temp directories, logs and journal are NOT SEARCHED, with the reason, so the
    audit is NOT A PASS; the engine's own view (inspect, events, the live sandbox) is searched,
    each with its control, and so are this machine's places (the launcher's)."""
    env = _remote_env(DOCKER_HOST=sshd.url, HOME=str(sshd.home), QSANDBOX_SSH_CLIENT="0")
    done = qsandbox("audit", "--path", "success", env=env, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 125, out
    assert "exit path success: launcher exit 0, 0 hit(s), 3 place(s) NOT SEARCHED" in done.stdout, out
    reason = f"could not read it from here: it is on the engine's host ({sshd.url}), not this machine"
    for name, key in (
        ("engine data root (container dirs, logs, layers)", "data-root"),
        ("engine runtime state (/run/docker, /run/containerd, ...)", "engine-run"),
        ("the engine's host: its /tmp, /var/tmp, /dev/shm, /var/log, journal", "engine-host"),
    ):
        assert f"  NOT SEARCHED {name}: {reason}" in done.stdout, out
        assert f"success: {key}" in done.stderr, done.stderr
    for searched in ("the live sandbox (inspect, top, diff)", "the engine's events since the search began"):
        (line,) = [x for x in done.stdout.splitlines() if searched in x]
        assert line.strip().startswith("0 hit(s) in ") and "control found" in line, line
    assert "0 hit(s) in launcher host /tmp: " in done.stdout, out
    assert "NOT A PASS" in done.stderr


def _ssh_processes(port: int) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"ssh") and str(port).encode() in argv and b"dial-stdio" in b" ".join(argv):
            found.append(pid)
    return found


def test_ssh_without_a_known_host_key_is_one_line(sshd, tmp_path):
    """paramiko refuses an unknown host key; the launcher says so in one line and starts nothing."""
    (tmp_path / ".ssh").mkdir()
    done = qsandbox("sweep", env=_remote_env(DOCKER_HOST=sshd.url, HOME=str(tmp_path), QSANDBOX_SSH_CLIENT="0"))
    assert done.returncode == 125, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"qsandbox: no container engine answers at {sshd.url}: Server '[127.0.0.1]:{sshd.port}' not found in "
        "known_hosts: add the host's key to ~/.ssh/known_hosts (e.g. ssh to it once)"
    ]


# -- mutual TLS ------------------------------------------------------------------------------------


def _make_certs(server: Path, client: Path, stranger: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as `dockerd --tlsverify`
    and DOCKER_CERT_PATH want them (ca.pem, cert.pem, key.pem); and a client from another CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(cn: str, key, issuer: str, issuer_key, *, ca: bool = False, usage=None, san=None) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san is not None:
            b = b.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(d: Path, ca_cert: x509.Certificate, c: x509.Certificate, key) -> None:
        d.mkdir(parents=True, exist_ok=True)
        pem = serialization.Encoding.PEM
        (d / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
        (d / "cert.pem").write_bytes(c.public_bytes(pem))
        (d / "key.pem").write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        (d / "key.pem").chmod(0o600)

    for d, ca_name in ((server, "test CA"), (stranger, "another CA")):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        if d is server:
            san = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            write(
                server,
                ca_cert,
                cert("engine", key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH, san=san),
                key,
            )
            ckey = ec.generate_private_key(ec.SECP256R1())
            write(client, ca_cert, cert("ci", ckey, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH), ckey)
        else:
            write(d, ca_cert, cert("stranger", key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH), key)


@dataclass
class TlsEngine:
    url: str
    client: Path  # DOCKER_CERT_PATH
    stranger: Path  # a client certificate the engine does not trust


@pytest.fixture(scope="module")
def tls_engine(tmp_path_factory) -> Iterator[TlsEngine]:
    """The engine behind mutual TLS on a loopback port (tests/docker/tls_forward.py)."""
    d = tmp_path_factory.mktemp("tls")
    _make_certs(d / "server", d / "client", d / "stranger")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "docker" / "tls_forward.py"), str(d / "server"), "/var/run/docker.sock"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        _wait_listening(port, proc, "the TLS forwarder")
        yield TlsEngine(url=f"tcp://127.0.0.1:{port}", client=d / "client", stranger=d / "stranger")
    finally:
        _stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def test_run_over_mutual_tls(image, canary, leak_search, tls_engine, tmp_path):
    # A CA bundle in the environment (a proxy's, as on many CI runners) must not replace the engine's CA.
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    env = _remote_env(
        DOCKER_HOST=tls_engine.url,
        DOCKER_TLS_VERIFY="1",
        DOCKER_CERT_PATH=str(tls_engine.client),
        REQUESTS_CA_BUNDLE=bundle,
        CURL_CA_BUNDLE=bundle,
    )
    done, _ = _run_remote(tmp_path, canary, env)
    _relay_roundtrip(env, tmp_path, canary)
    said = _not_checked_lines(done.stderr, tls_engine.url)
    assert [line.split(":")[1].strip() for line in said] == [
        "engine access",
        "sandbox uid",
        "engine host swap",
    ], done.stderr
    assert leak_search.all_hits() == []


def test_tls_client_the_engine_does_not_trust_is_refused(tls_engine):
    env = _remote_env(DOCKER_HOST=tls_engine.url, DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(tls_engine.stranger))
    done = qsandbox("sweep", env=env)
    assert done.returncode == 125, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"qsandbox: no container engine answers at {tls_engine.url}: "), line


# -- the launcher in a CI job container with the engine's socket -----------------------------------


def test_launcher_in_a_job_container_with_the_socket(image, canary, leak_search, tmp_path):
    """GitLab's socket binding: the job container has the script and --output in its own filesystem
    only, which the engine (on the host) cannot see. Files travel over the attach stream, so it works."""
    word = secrets.token_hex(6)
    job_dir = f"/job-{word}"
    assert not os.path.exists(job_dir)
    shell = (
        f"mkdir -p {job_dir} && cat > {job_dir}/job.py <<'EOF'\n{SCRIPT}EOF\n"
        # the key is the job's first line of stdin, passed on to the launcher's --token-stdin
        f"head -n 1 | /opt/qsandbox/bin/python -m qsandbox run --platform local --token-stdin --output {job_dir}/out "
        f"{job_dir}/job.py {word} && echo delivered: && cat {job_dir}/out/result.txt"
    )
    name = f"qsandbox-test-job-{word}"
    try:
        subprocess.run(
            [
                "docker", "create", "-i", "--name", name, "--user", "root",
                "-v", "/var/run/docker.sock:/var/run/docker.sock",
                "-e", "PYTHONPATH=/tmp/launcher-deps",
                "--entrypoint", "/bin/sh", image, "-c", shell,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        # The image carries the launcher's code but not the docker SDK (it needs no engine): a job
        # image would pip install qsandbox; here the SDK comes from this venv, put into the job's own layer.
        import docker as sdk

        shutil.copytree(Path(sdk.__file__).parent, tmp_path / "deps" / "docker")
        subprocess.run(
            ["docker", "cp", str(tmp_path / "deps"), f"{name}:/tmp/launcher-deps"],
            check=True,
            capture_output=True,
        )
        done = subprocess.run(
            ["docker", "start", "-ai", name], input=canary + "\n", capture_output=True, text=True, timeout=300
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert f"script ran {word}" in done.stdout
    assert done.stdout.rstrip().endswith(f"delivered:\nmade in the sandbox: {word}"), done.stdout
    assert "container and secret destroyed (engine confirms)" in done.stderr
    assert not os.path.exists(job_dir)  # nothing of it was on the engine's host
    assert leak_search.all_hits() == []
