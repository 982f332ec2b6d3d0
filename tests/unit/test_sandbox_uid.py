"""The sandbox's uid when root runs qsandbox: nobody's on the host (issue 23). Without a user
namespace the container's uid is a host uid, and an account with it reads the key through
/proc/<pid>/root; the real-engine proof is tests/docker/test_host_accounts.py.
"""

from __future__ import annotations

import grp
import pwd
from dataclasses import replace
from types import SimpleNamespace

import pytest

from qsandbox.common.errors import PreflightRefused
from qsandbox.launcher.checks import doctor
from qsandbox.launcher.core import settings
from qsandbox.launcher.core.settings import SANDBOX_UID, UNUSED_UID_BASE, Hardening, sandbox_uid, unused_uid
from qsandbox.launcher.engine import client as engine
from qsandbox.launcher.engine import preflight
from qsandbox.launcher.engine.client import EngineInfo

BASE = UNUSED_UID_BASE
DOCKER = EngineInfo(kind="Docker", version="20.10", api_version="1.41", rootless=False, log_driver="none", debug=False)
REMAPPED = replace(DOCKER, userns_remap=True, remap_root=100000)
ROOTLESS = replace(DOCKER, kind="rootless Docker", rootless=True)


@pytest.fixture
def accounts(monkeypatch, tmp_path):
    """A host whose passwd, group and subordinate-id databases are these dicts and files."""
    users: dict[int, str] = {}
    groups: dict[int, str] = {}

    def getpwuid(uid: int):
        if uid not in users:
            raise KeyError(f"getpwuid(): uid not found: {uid}")
        return SimpleNamespace(pw_name=users[uid], pw_uid=uid)

    def getgrgid(gid: int):
        if gid not in groups:
            raise KeyError(f"getgrgid(): gid not found: {gid}")
        return SimpleNamespace(gr_name=groups[gid], gr_gid=gid, gr_mem=[])

    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    monkeypatch.setattr(grp, "getgrgid", getgrgid)
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    monkeypatch.setattr(settings, "SUBORDINATE_IDS", (str(subuid), str(subgid)))
    return SimpleNamespace(users=users, groups=groups, subuid=subuid, subgid=subgid)


def as_uid(monkeypatch, uid: int) -> None:
    monkeypatch.setattr(settings.os, "getuid", lambda: uid)
    monkeypatch.setattr(preflight.os, "getuid", lambda: uid)


def test_the_first_free_uid_from_the_base_is_taken(accounts):
    assert unused_uid() == BASE  # an empty host (no subordinate-id files at all)
    accounts.users[BASE] = "ldap-alice"  # passwd: a directory account
    accounts.groups[BASE + 1] = "lab"  # group database only: the gid would be a group's
    accounts.subuid.write_text(f"bob:100000:65536\ncarol:{BASE + 2}:1\n")  # carol's rootless containers
    accounts.subgid.write_text(f"dave:{BASE + 3}:2\n")
    assert unused_uid() == BASE + 5
    assert unused_uid() == BASE + 5  # deterministic: the same host gives the same uid


def test_who_has_a_uid_is_said(accounts):
    accounts.users[10001] = "ldap-alice"
    accounts.groups[10002] = "lab"
    accounts.subuid.write_text("garbage\n\nbob:100000:65536\n")
    assert settings.uid_user(10001) == "user ldap-alice"
    assert settings.uid_user(10002) == "group lab"
    assert settings.uid_user(165535) == f"bob's subordinate ids ({accounts.subuid})"
    assert settings.uid_user(165536) is None
    assert settings.uid_user(165535, subordinate=False) is None


def test_no_free_uid_is_a_refusal(accounts, monkeypatch):
    monkeypatch.setattr(settings, "UNUSED_UID_TRIES", 3)
    accounts.subuid.write_text(f"everyone:{BASE}:3\n")
    with pytest.raises(PreflightRefused, match="no sandbox uid is nobody's"):
        unused_uid()


def test_root_gets_a_uid_nobody_has_and_an_ordinary_user_their_own(accounts, monkeypatch):
    accounts.users[SANDBOX_UID] = "ldap-alice"  # the old code's choice, a directory account here
    as_uid(monkeypatch, 0)
    h = Hardening()
    assert h.uid == BASE and h.create_kwargs()["user"] == f"{BASE}:{BASE}"
    assert f"uid={BASE},gid={BASE}" in h.tmpfs()["/run/qsandbox"]
    assert h.for_engine(DOCKER).uid == BASE
    # In the engine's own user namespace the image's uid, which the engine maps to a subordinate uid
    # (a uid beyond its mapped range could not run there).
    assert h.for_engine(REMAPPED).uid == SANDBOX_UID == sandbox_uid(own_userns=True)
    assert h.for_engine(ROOTLESS).uid == SANDBOX_UID
    as_uid(monkeypatch, 1000)
    assert sandbox_uid() == 1000 and Hardening().for_engine(REMAPPED).uid == 1000


def test_engine_reports_userns_remap():
    def client(security: list[str], root_dir: str) -> SimpleNamespace:
        info = {"SecurityOptions": security, "DockerRootDir": root_dir, "CgroupVersion": "2"}
        return SimpleNamespace(
            version=lambda: {"Version": "20.10", "Components": [{"Name": "Engine"}]},
            info=lambda: info,
            api=SimpleNamespace(api_version="1.41"),
        )

    seen = engine.describe.__wrapped__(
        client(["name=seccomp,profile=default", "name=userns"], "/var/lib/docker/231072.231072")
    )
    assert seen.userns_remap and seen.remap_root == 231072 and seen.own_userns and not seen.rootless
    plain = engine.describe.__wrapped__(client(["name=seccomp,profile=default"], "/var/lib/docker"))
    assert not plain.userns_remap and plain.remap_root is None and not plain.own_userns
    odd = engine.describe.__wrapped__(client(["name=userns"], "/srv/docker"))
    assert odd.userns_remap and odd.remap_root is None


def test_preflight_says_whose_uid_it_is(accounts):
    accounts.users[SANDBOX_UID] = "ldap-alice"
    accounts.users[1000] = "me"
    account = preflight.sandbox_account

    taken = account(DOCKER, SANDBOX_UID, None, 0)  # what the old code did as root
    assert taken.checked and taken.warning is not None
    assert "uid 10001 (no user namespace) is also user ldap-alice's on this host" in taken.warning

    free = account(DOCKER, BASE, None, 0)
    assert free.warning is None and free.checked
    assert free.detail == (
        f"uid {BASE} (no user namespace): no user, group or subordinate range on this host has it "
        "(NSS, /etc/subuid, /etc/subgid)"
    )

    mine = account(DOCKER, 1000, None, 1000)
    assert mine.warning is None and mine.detail.startswith("uid 1000: yours")

    accounts.users[100000 + SANDBOX_UID] = "ldap-bob"  # the remapped host uid is someone's
    remapped = account(REMAPPED, SANDBOX_UID, None, 0)
    assert "host uid 110001 under the engine's userns-remap is also user ldap-bob's" in (remapped.warning or "")
    ok = account(replace(REMAPPED, remap_root=200000), SANDBOX_UID, None, 0)
    assert ok.warning is None and "host uid 210001" in ok.detail
    unknown = account(replace(REMAPPED, remap_root=None), SANDBOX_UID, None, 0)
    assert not unknown.checked and unknown.warning is None
    assert unknown.unchecked == (
        "sandbox uid: not checked: uid 10001 is shifted by the engine's userns-remap to a host uid it does not report"
    )

    rootless = account(ROOTLESS, 1000, None, 1000)
    assert rootless.warning is None and "inside rootless Docker's user namespace" in rootless.detail


@pytest.mark.parametrize("info", [DOCKER, REMAPPED], ids=["plain", "userns-remap"])
def test_a_remote_engines_accounts_are_not_checked(accounts, info):
    accounts.users[SANDBOX_UID] = "ldap-alice"  # this machine's accounts say nothing of the engine's host
    found = preflight.sandbox_account(info, SANDBOX_UID, "ssh://ci@build-host", 0)
    assert not found.checked and found.warning is None
    assert found.unchecked is not None and found.unchecked.startswith(
        "sandbox uid: not checked: the engine runs on another host (ssh://ci@build-host), "
        "where which accounts have uid 10001"
    )


def test_findings_and_doctor_carry_the_sandbox_uid_line(accounts, monkeypatch, tmp_path):
    as_uid(monkeypatch, 0)
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    sock.chmod(0o660)
    found = {f.name: f for f in preflight.findings(DOCKER, {"DOCKER_HOST": f"unix://{sock}"})}
    assert found["sandbox uid"].detail.startswith(f"uid {BASE} (no user namespace): no user")
    names = list(found)
    assert names.index("sandbox uid") == names.index("engine access") + 1
    remote = {f.name: f for f in preflight.findings(DOCKER, {"DOCKER_HOST": "ssh://ci@h"})}
    assert not remote["sandbox uid"].checked

    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    monkeypatch.setattr(engine, "connect", lambda timeout=120: object())
    monkeypatch.setattr(engine, "describe", lambda _client: DOCKER)
    monkeypatch.setattr(doctor.image, "check", lambda _client: (_ for _ in ()).throw(PreflightRefused("stop")))
    lines: list[str] = []
    doctor.checks(lambda c: lines.append(c.line()))
    assert f"ok   sandbox uid: uid {BASE} (no user namespace): no user, group or subordinate range" in "\n".join(lines)
    # The old code's uid, which an account has here: a warning, never an ok.
    lines.clear()
    accounts.users[SANDBOX_UID] = "ldap-bob"
    monkeypatch.setattr(preflight, "Hardening", lambda: Hardening(uid=SANDBOX_UID))
    doctor.checks(lambda c: lines.append(c.line()))
    assert any(line.startswith("warn sandbox uid: the sandbox's uid 10001") for line in lines), lines
