from __future__ import annotations

import pytest

from qsandbox.common import handoff
from qsandbox.common.errors import UsageError
from qsandbox.launcher.core.settings import Hardening, parse_size


def test_start_roundtrip_and_repr_hides_token():
    start = handoff.Start(token="tok-abcdefghijklmnop", channel="ibm_cloud", instance="crn:x", ca_pem="PEM")
    assert "tok-abcdefghijklmnop" not in repr(start)
    message = handoff.encode_start(start)
    assert b"\n" not in message  # one JSON object, the payload of one CONTROL frame
    assert handoff.decode(message) == start


def test_abort_roundtrip_and_bad_messages():
    assert handoff.decode(handoff.encode_abort("timeout")) == handoff.Abort("timeout")
    with pytest.raises(ValueError):
        handoff.encode_abort("whatever")
    for bad in (b"not json\n", b"[1]\n", b'{"type":"start"}\n', b'{"type":"abort","reason":"x"}\n'):
        with pytest.raises(handoff.HandoffError):
            handoff.decode(bad)


def _attrs(h: Hardening) -> dict:
    kw = h.create_kwargs()
    return {
        "Config": {"User": kw["user"]},
        "HostConfig": {
            "ReadonlyRootfs": True,
            "Privileged": False,
            "CapDrop": ["ALL"],
            "CapAdd": None,
            "SecurityOpt": ["no-new-privileges"],
            "Tmpfs": kw["tmpfs"],
            "Memory": h.memory,
            "MemorySwap": h.memory,
            "NanoCpus": h.nano_cpus,
            "PidsLimit": h.pids,
            "Ulimits": [{"Name": "core", "Soft": 0, "Hard": 0}],
            "LogConfig": {"Type": "none"},
            "AutoRemove": True,
            "IpcMode": "private",
        },
    }


def test_hardening_readback_accepts_what_was_asked():
    h = Hardening()
    assert h.mismatches(_attrs(h)) == []


@pytest.mark.parametrize(
    ("key", "value", "name"),
    [
        ("ReadonlyRootfs", False, "read-only root"),
        ("CapDrop", [], "dropped capabilities"),
        ("CapAdd", ["NET_ADMIN"], "added capabilities"),
        ("SecurityOpt", [], "no-new-privileges"),
        ("MemorySwap", -1, "memory+swap limit"),
        ("LogConfig", {"Type": "json-file"}, "log driver"),
        ("AutoRemove", False, "auto-remove"),
        ("Ulimits", [], "core ulimit"),
        ("Tmpfs", {"/tmp": "rw"}, "tmpfs mounts"),
        ("Privileged", True, "privileged"),
    ],
)
def test_hardening_readback_catches_each_difference(key, value, name):
    h = Hardening()
    attrs = _attrs(h)
    attrs["HostConfig"][key] = value
    found = h.mismatches(attrs)
    assert len(found) == 1 and found[0].startswith(name + ":")


def _podman_attrs(h: Hardening) -> dict:
    """What rootless Podman 4.3 on cgroup v1 reported for the sandbox (seen on this project's CI)."""
    from qsandbox.launcher.core.settings import PODMAN_DEFAULT_CAPS

    attrs = _attrs(h)
    host = attrs["HostConfig"]
    host.update(
        CapDrop=sorted(PODMAN_DEFAULT_CAPS),
        Ulimits=[],
        IpcMode="shareable",
        Memory=0,
        MemorySwap=0,
        NanoCpus=0,
        PidsLimit=0,
    )
    host["Tmpfs"] = {path: opts + ",rprivate,tmpcopyup" for path, opts in h.tmpfs().items()}
    added = "rw,rprivate,nosuid,nodev,tmpcopyup"  # its --read-only-tmpfs mounts
    host["Tmpfs"].update({"/run": added, "/var/tmp": added})
    return attrs


def test_podman_readback_in_its_own_words_is_accepted():
    h = Hardening(podman=True, rootless=True, limits=False)
    assert ",U" in h.tmpfs()["/run/qsandbox"] and "uid=" not in h.tmpfs()["/run/qsandbox"]
    assert "mem_limit" not in h.create_kwargs()
    assert h.mismatches(_podman_attrs(h)) == []


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (lambda host: host.update(CapDrop=["CHOWN"]), "dropped capabilities"),
        (lambda host: host["Tmpfs"].update({"/var/lib/x": "rw,nosuid,nodev"}), "tmpfs mounts"),
        (lambda host: host["Tmpfs"].update({"/run": "rw,rprivate"}), "tmpfs mounts"),  # not nosuid,nodev
        (lambda host: host["Tmpfs"].update({"/run/qsandbox": "rw,size=65536,mode=0700,U,rprivate"}), "tmpfs mounts"),
        (lambda host: host.update(IpcMode="host"), "ipc mode"),
        (lambda host: host.update(Ulimits=[{"Name": "core", "Soft": -1, "Hard": -1}]), "core ulimit"),
    ],
)
def test_podman_readback_still_catches_a_weaker_setting(change, name):
    h = Hardening(podman=True, rootless=True, limits=False)
    attrs = _podman_attrs(h)
    change(attrs["HostConfig"])
    found = h.mismatches(attrs)
    assert len(found) == 1 and found[0].startswith(name + ":"), found


def test_limits_are_checked_whenever_the_engine_can_apply_them():
    h = Hardening(podman=True, rootless=True, limits=True)
    assert {m.split(":")[0] for m in h.mismatches(_podman_attrs(h))} == {
        "memory limit",
        "memory+swap limit",
        "cpu limit",
        "pids limit",
    }


def test_secret_tmpfs_options():
    t = Hardening(uid=4242, secret_size=4096).tmpfs()
    for path in ("/home/sandbox/.qiskit", "/run/qsandbox"):
        assert t[path] == "rw,noexec,nosuid,nodev,size=4096,mode=0700,uid=4242,gid=4242"


def test_parse_size():
    assert parse_size("64k") == 65536 and parse_size("2g") == 2 << 30 and parse_size("100") == 100
    with pytest.raises(UsageError):
        parse_size("lots")
