"""Each mode's plan (launcher/run/plans.py), and `Run` asking its plan rather than its mode: what each
plan decides before the engine is contacted, what it makes around the sandbox (against the fake
engine), and that the user's RunSettings never change while a run learns."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from fake_engine import FakeEngine
from helpers import new_canary

from qsandbox.launcher.core.credentials import KeySource
from qsandbox.launcher.core.settings import RunSettings
from qsandbox.launcher.engine import localplatform
from qsandbox.launcher.run import admission, plans, run
from qsandbox.launcher.run.lifecycle import Cleanup

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "a.py"
    path.write_text("print('hello')\n")
    return path


@pytest.fixture
def source(tmp_path: Path) -> KeySource:
    path = tmp_path / "key"
    path.write_text(new_canary() + "\n")
    return KeySource(file=str(path))


def _learned(settings: RunSettings) -> plans.Learned:
    return plans.Learned(settings.image, settings.hardening)


@pytest.mark.parametrize(
    ("platform", "egress", "batch_platform", "plan"),
    [
        ("ibm", "allowlist", False, plans.Relayed),
        ("ibm", "open", False, plans.Open),
        ("local", "allowlist", False, plans.OwnEmulator),
        ("shared", "allowlist", False, plans.SharedEmulator),
        ("local", "allowlist", True, plans.SharedEmulator),  # a batch's emulator, shared by its runs
    ],
)
def test_each_mode_has_its_plan(script, platform, egress, batch_platform, plan):
    settings = RunSettings(script=script, platform=platform, egress=egress)
    emulator = localplatform.LocalPlatform("n", "e", CA, None) if batch_platform else None
    assert type(plans.plan_for(settings, emulator)) is plan


def test_the_relayed_plan_has_no_network_and_points_clients_at_the_entry_points_proxy(script):
    settings = RunSettings(script=script, allow_hosts=("example.org",))
    said: list[str] = []
    learned = _learned(settings)
    plans.Relayed().rules(settings, learned, said.append)
    env = dict(learned.extra_env)
    assert learned.network == "none"
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:3128"
    assert learned.egress is not None and "example.org" in learned.egress.allow
    assert said == []


def test_the_open_plan_keeps_the_engines_network_relays_only_the_broker_and_warns(script):
    settings = RunSettings(script=script, egress="open")
    said: list[str] = []
    learned = _learned(settings)
    plans.Open().rules(settings, learned, said.append)
    assert learned.network is None and not dict(learned.extra_env).get("HTTPS_PROXY")
    assert learned.egress is not None  # the key broker still goes through the relay
    assert len(said) == 1 and "--network open" in said[0] and "any host" in said[0]


@pytest.mark.parametrize("plan", [plans.OwnEmulator(None), plans.SharedEmulator(None)])
def test_a_rehearsal_relays_nothing_and_needs_no_real_key(script, plan):
    settings = RunSettings(script=script, platform="local")
    learned = _learned(settings)
    plan.rules(settings, learned, lambda _: None)
    assert learned.egress is None and learned.network is None
    assert plan.stand_in_key() is not None and plans.Relayed().stand_in_key() is None


def test_a_batchs_emulator_gets_a_network_of_the_runs_own_before_the_sandbox_and_loses_it_after(
    fake: FakeEngine, script
):
    """The shared plan joins the emulator to a network of this run's own, makes the sandbox on it
    with the emulator's CA and instance, and registers the network's removal for after the sandbox."""
    settings = RunSettings(script=script, platform="local")
    emulator = localplatform.LocalPlatform("batchnet", "emulator-id", CA, None, instance="crn:emulated")
    learned, cleanup, made = _learned(settings), Cleanup(), []
    client = fake.client()
    plans.SharedEmulator(emulator).around_sandbox(
        client, "run1", None, learned, cleanup, lambda: made.append(list(fake.events))
    )
    assert made and any(e.startswith("network connect qsandbox-run1") for e in made[0])
    assert learned.network == "qsandbox-run1" and learned.ca_pem == CA and learned.instance == "crn:emulated"
    assert dict(learned.extra_env)["REQUESTS_CA_BUNDLE"] == dict(learned.extra_env)["SSL_CERT_FILE"]
    assert cleanup.pending == ["remove the run's network"]
    cleanup.unwind()
    assert fake.events[-1] == "network remove qsandbox-run1"


def test_a_run_in_a_batch_with_its_emulator_runs_on_its_own_network_and_leaves_nothing(
    fake: FakeEngine, script, source
):
    """`Run` end to end with the shared plan: the sandbox is created on the run's network, trusting
    the emulator's CA; the network is gone with it; the user's settings are unchanged."""
    settings = RunSettings(script=script, platform="local")
    before = repr(settings)
    emulator = localplatform.LocalPlatform("batchnet", "emulator-id", CA, None, instance="crn:emulated")
    checked = admission.check_engine(settings, io.BytesIO())
    batch = run.InBatch(threading.Semaphore(1), checked, emulator)
    the_run = run.Run(settings, source, out=io.BytesIO(), err=io.BytesIO(), prompt=None, batch=batch)
    result = the_run.execute()
    body = fake.sandbox().body
    env = dict(e.split("=", 1) for e in body["Env"])
    assert result.exit_code == 0 and result.leftovers == []
    assert body["HostConfig"]["NetworkMode"] == f"qsandbox-{result.run_id}"
    assert env["QISKIT_IBM_INSTANCE"] == "crn:emulated" and "SSL_CERT_FILE" in env and "HTTPS_PROXY" not in env
    assert fake.sandbox().seen.start is not None and fake.sandbox().seen.start.ca_pem == CA
    assert fake.networks == {} and "list networks" in fake.events  # a plan that makes one looks for it after
    assert repr(settings) == before and the_run.settings is settings  # what the run learned is elsewhere


def test_revoke_after_on_an_emulators_network_runs_before_the_network_goes(fake: FakeEngine, script, source):
    """--revoke-after's broker joins the emulator's network: its step runs after the sandbox is gone
    and before the run's network is removed (the refactor once registered it first, so it ran last,
    on a network already gone: caught by tests/docker/test_platform_shared.py)."""
    settings = RunSettings(script=script, platform="local", revoke_after=True)
    emulator = localplatform.LocalPlatform("batchnet", "emulator-id", CA, None)
    checked = admission.check_engine(settings, io.BytesIO())
    batch = run.InBatch(threading.Semaphore(1), checked, emulator)
    err = io.BytesIO()
    result = run.Run(settings, source, out=io.BytesIO(), err=err, prompt=None, batch=batch).execute()
    network = f"qsandbox-{result.run_id}"
    assert result.revocation is not None and result.revocation.ok, err.getvalue().decode()
    revoke = next(c for c in fake._all if c.name == "broker:revoke")
    assert revoke.body["HostConfig"]["NetworkMode"] == network
    events = fake.events
    assert events.index("create broker:revoke") < events.index(f"network remove {network}")
    assert events.index(f"removed {fake.sandbox().name}") < events.index("create broker:revoke")


def test_run_tells_the_story_in_under_150_lines_and_never_asks_its_mode():
    """Issue 26's bar, kept: a new mode is a new plan, and touches no `Run` method."""
    import inspect
    import re

    source = inspect.getsource(run.Run)
    assert len(source.splitlines()) < 150
    asks = re.findall(r"settings\.(?:platform|egress)\b|[\"'](?:ibm|local|shared|open|allowlist)[\"']", source)
    assert asks == []
