"""compose.yaml must carry exactly the hardening the launcher applies."""

from __future__ import annotations

import yaml
from helpers import ROOT

from qsandbox import __version__
from qsandbox.launcher.core.settings import IMAGE, SANDBOX_UID, Hardening


def test_compose_sandbox_matches_launcher_hardening():
    service = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["sandbox"]
    h = Hardening(uid=SANDBOX_UID)  # the image's own uid: compose runs the probe, never a key
    kw = h.create_kwargs()
    assert service["image"] == IMAGE
    assert service["build"]["labels"]["qsandbox.version"] == __version__
    assert service["user"] == kw["user"]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert service["security_opt"] == kw["security_opt"]
    assert service["mem_limit"] == service["memswap_limit"] == h.memory
    assert service["pids_limit"] == h.pids
    assert service["ulimits"] == {"core": 0}
    assert service["logging"] == {"driver": "none"}
    assert service["init"] is kw["init"] is False
    tmpfs = dict(entry.split(":", 1) for entry in service["tmpfs"])
    assert tmpfs == kw["tmpfs"]
