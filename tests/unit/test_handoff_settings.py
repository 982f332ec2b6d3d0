from __future__ import annotations

import pytest

from qsandbox import handoff
from qsandbox.errors import UsageError
from qsandbox.settings import Hardening, parse_size


def test_start_roundtrip_and_repr_hides_token():
    start = handoff.Start(token="tok-abcdefghijklmnop", channel="ibm_cloud", instance="crn:x", ca_pem="PEM")
    assert "tok-abcdefghijklmnop" not in repr(start)
    line = handoff.encode_start(start)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert handoff.decode(line) == start


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
            "ReadonlyRootfs": True, "Privileged": False, "CapDrop": ["ALL"], "CapAdd": None,
            "SecurityOpt": ["no-new-privileges"], "Tmpfs": kw["tmpfs"], "Memory": h.memory,
            "MemorySwap": h.memory, "NanoCpus": kw["nano_cpus"], "PidsLimit": h.pids,
            "Ulimits": [{"Name": "core", "Soft": 0, "Hard": 0}], "LogConfig": {"Type": "none"},
            "AutoRemove": True, "IpcMode": "private",
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


def test_secret_tmpfs_options():
    t = Hardening(uid=4242, secret_size=4096).tmpfs()
    for path in ("/home/sandbox/.qiskit", "/run/qsandbox"):
        assert t[path] == "rw,noexec,nosuid,nodev,size=4096,mode=0700,uid=4242,gid=4242"


def test_parse_size():
    assert parse_size("64k") == 65536 and parse_size("2g") == 2 << 30 and parse_size("100") == 100
    with pytest.raises(UsageError):
        parse_size("lots")
