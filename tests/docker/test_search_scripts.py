"""The searches that run inside a sandbox must be able to find what they look for.

find_other_key.py (the hostile other-sandbox search, and the rootless users' inside search) and
search_for_key.py (the short-lived mode's search) know the key only by its SHA-256. Each form a
leak could take is planted where the search looks, and each must be found; a near miss must not.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, qsandbox


def _target(key: str) -> str:
    return f"{hashlib.sha256(key.encode()).hexdigest()}:{len(key)}"


def _forms(key: str) -> dict[str, bytes]:
    raw = key.encode()
    forms = {
        "literal": b"api_key: " + raw + b"\n",
        "in-a-longer-run": b"x" + secrets.token_urlsafe(30).encode() + raw + b"_and_more-token-chars\n",
        "url-encoded": b"t=" + "".join(f"%{b:02X}" for b in raw).encode() + b"&",  # every byte escaped
        "past-the-first-MiB": b"." * (3 << 19) + raw + b"\n",
    }
    for shift in range(3):
        forms[f"base64+{shift}"] = base64.b64encode(b"{" * shift + raw + b"}\n") + b"\n"
        forms[f"base64url+{shift}"] = base64.urlsafe_b64encode(b"-" * shift + raw + b"\n") + b"\n"
    return forms


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A project directory, sent in whole as /work (--workdir)."""
    d = Path(tempfile.mkdtemp(prefix="qsandbox-search-"))
    d.chmod(0o755)  # no secret in it: the controls hold a throwaway value
    yield d
    shutil.rmtree(d)


def test_find_other_key_finds_every_form_and_not_a_near_miss(image, canary, workdir):
    value = secrets.token_urlsafe(33)  # what the search looks for: not this run's key
    script = workdir / "find_other_key.py"
    shutil.copy(ROOT / "tests" / "hostile" / "find_other_key.py", script)
    planted = {}
    for form, data in _forms(value).items():
        planted[form] = workdir / f"planted-{form}"
        planted[form].write_bytes(data)
    near = value[:-1] + ("A" if value[-1] != "A" else "B")  # one character off
    (workdir / "near-miss").write_bytes(b"api_key: " + near.encode() + b"\n" + base64.b64encode(near.encode()))
    for p in workdir.iterdir():
        p.chmod(0o644)
    done = qsandbox(
        "run", "--token-stdin", "--workdir", str(workdir), str(script), _target(value), "/work", input=canary + "\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"looked at {len(planted) + 2} files; other key found: True", done.stdout
    found = set(lines[1].removeprefix("found in:").split())
    assert found == {f"/work/{p.name}" for p in planted.values()}, done.stdout


def test_find_other_key_given_a_range_of_lengths(image, canary, workdir):
    value = secrets.token_urlsafe(30)  # 40 characters, not the 44 of an IBM Cloud API key
    script = workdir / "find_other_key.py"
    shutil.copy(ROOT / "tests" / "hostile" / "find_other_key.py", script)
    (workdir / "planted").write_bytes(base64.b64encode(b"ab" + value.encode()))
    for p in workdir.iterdir():
        p.chmod(0o644)
    sha = hashlib.sha256(value.encode()).hexdigest()
    done = qsandbox(
        "run", "--token-stdin", "--workdir", str(workdir), str(script), f"{sha}:40-48", "/work", input=canary + "\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[1] == "found in: /work/planted"
    done = qsandbox("run", "--token-stdin", "--workdir", str(workdir), str(script), sha, "/work", input=canary + "\n")
    assert done.stdout.strip().splitlines()[1] == "found in:", done.stdout  # 44 characters by default


def test_search_for_key_finds_a_key_held_only_in_memory(image, canary):
    """The short-lived mode's search, in api-key mode: the key in its file, and in a process's memory."""
    done = qsandbox(
        "run",
        "--platform",
        "local",
        "--token-stdin",
        str(ROOT / "tests" / "scripts" / "search_for_key.py"),
        _target(canary),
        "--hold",
        "/run/qsandbox/token",
        input=canary + "\n",
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("searched ")]
    assert "'/run/qsandbox/token'" in line, line
    assert any(p.startswith("'/proc/") and p.endswith("/mem'") for p in line.split("[")[1].rstrip("]").split(", ")), (
        line
    )
