"""What a run needs from its mode, one plan per mode, and what a run learns as it goes.

`Run` (launcher/run/run.py) never asks which mode it is in: it asks its plan. A plan answers before
the engine is contacted (`rules`: where the sandbox may connect and how) and while the sandbox is
made (`around_sandbox`: what must exist around it, each thing registered for clean-up as it is
made). A new mode is a new plan here and touches no `Run` method.

| plan | `--platform` / `--network` | the sandbox's network | its HTTPS |
|---|---|---|---|
| `Relayed` | ibm / allowlist (default) | none | the launcher's relay, allowlisted |
| `Open` | ibm / open | the engine's default bridge | straight out |
| `OwnEmulator` | local | a network of the run's own, with its emulator | the emulator, under IBM's names |
| `SharedEmulator` | shared, or a batch's | a network of the run's own that the emulator joins | the emulator |
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

import docker

from ...common import mux
from ...common.paths import CA_FILE
from ...common.platform_constants import INSTANCE_CRN
from ..core.credentials import Secret
from ..core.settings import Hardening, RunSettings
from ..engine import localplatform
from . import egress, transfer
from .lifecycle import Cleanup
from .relay import Egress, parse_connect_to

CA_ENV = (("REQUESTS_CA_BUNDLE", str(CA_FILE)), ("SSL_CERT_FILE", str(CA_FILE)))  # written by the entry point


@dataclass
class Learned:
    """What a run learns as it goes. `RunSettings` stays the user's frozen intent; this is the rest."""

    image: str
    hardening: Hardening
    prewarm: bool = False
    network: str | None = None
    instance: str | None = None
    extra_env: tuple[tuple[str, str], ...] = ()
    ca_pem: str | None = None  # the CA the sandbox trusts (--ca-file, or the emulator's)
    egress: Egress | None = None  # where the relay lets the sandbox and the key broker go
    inputs: transfer.Inputs | None = None  # what goes to /work, packed once
    receiver: transfer.OutputReceiver | None = None
    started_at: datetime | None = None  # when the run began (UTC), for reports

    def sandbox_settings(self, settings: RunSettings) -> RunSettings:
        """The settings the sandbox is created with and verified against: the intent, fitted."""
        return replace(
            settings,
            image=self.image,
            hardening=self.hardening,
            prewarm=self.prewarm,
            network=self.network or settings.network,
            instance=settings.instance or self.instance,
            extra_env=(*settings.extra_env, *self.extra_env),
        )


class Lab(Protocol):
    """What makes a run a `qsandbox lab` (launcher/run/lab.py's LabPlan), in any mode: its inputs
    (DIR, whole), its token in the start message, and the listener it serves once that is out."""

    token: str

    def collect(self, settings: RunSettings) -> transfer.Inputs: ...

    def serve(self, channels: mux.Channels, local: ExitStack, say: Callable[[str], None]) -> None: ...


class Plan:
    """The IBM modes' common ground: the relay's rules, and nothing around the sandbox."""

    rehearsal = False  # the emulator plays IBM: without a key source, a throwaway key serves
    makes_networks = False  # no network object ever carries this run's label: none to look for after

    def stand_in_key(self) -> Secret | None:
        """The key when the user gave no key source: None, ask for it (at the prompt)."""
        return localplatform.throwaway_key() if self.rehearsal else None

    def rules(self, settings: RunSettings, learned: Learned, say: Callable[[str], None]) -> None:
        """Before the engine is contacted: where the sandbox and the key broker may connect."""
        # The broker (short-lived tokens, --revoke-after) goes through the relay in either IBM mode.
        learned.egress = Egress(
            egress.allowlist(settings.allow_hosts), dict(parse_connect_to(c) for c in settings.connect_to)
        )

    def around_sandbox(
        self,
        client: docker.DockerClient,
        run_id: str,
        secret: Secret | None,
        learned: Learned,
        cleanup: Cleanup,
        make_sandbox: Callable[[], None],
    ) -> None:
        """Make what the sandbox needs around it, and the sandbox (`make_sandbox`), registering each.
        `secret`: None while the user types it at the prompt (an IBM plan needs no key for this)."""
        make_sandbox()


class Relayed(Plan):
    """--platform ibm, --network allowlist: no network at all; the entry point's CONNECT proxy,
    relayed by the launcher, is the only way out."""

    def rules(self, settings: RunSettings, learned: Learned, say: Callable[[str], None]) -> None:
        super().rules(settings, learned, say)
        learned.network = "none"
        learned.extra_env = (*learned.extra_env, *Egress.environment())


class Open(Plan):
    """--platform ibm, --network open: the engine's default network, said loudly."""

    def rules(self, settings: RunSettings, learned: Learned, say: Callable[[str], None]) -> None:
        super().rules(settings, learned, say)
        say(
            "warning: --network open: the script, and every package it imports, can send the API key to "
            "any host on the internet while the run lasts"
        )


class _Emulated(Plan):
    rehearsal = True
    makes_networks = True  # a network of the run's own

    def rules(self, settings: RunSettings, learned: Learned, say: Callable[[str], None]) -> None:
        """The emulator's network is the sandbox's only way out; nothing is relayed."""

    @staticmethod
    def _on(learned: Learned, network: str, platform: localplatform.LocalPlatform) -> None:
        """The sandbox joins `network` and trusts the emulator's CA (written by the entry point)."""
        learned.network, learned.instance, learned.ca_pem = network, platform.instance, platform.ca_pem
        learned.extra_env = (*learned.extra_env, *CA_ENV)


class OwnEmulator(_Emulated):
    """--platform local: a network of the run's own, and an emulator on it, started while the
    sandbox is made and imports Qiskit."""

    def __init__(self, queue_time: float | None) -> None:
        self.queue_time = queue_time

    def around_sandbox(
        self,
        client: docker.DockerClient,
        run_id: str,
        secret: Secret | None,
        learned: Learned,
        cleanup: Cleanup,
        make_sandbox: Callable[[], None],
    ) -> None:
        assert secret is not None, "a rehearsal has its key before the sandbox is made"  # stand_in_key
        localplatform.remove_stale_networks(client)
        network = localplatform.create_network(client, run_id)
        cleanup.push("remove the run's network", lambda: localplatform.remove_network(client, network))
        learned.network, learned.instance = network, INSTANCE_CRN
        learned.extra_env = (*learned.extra_env, *CA_ENV)
        with ThreadPoolExecutor(1) as pool:
            emulator = pool.submit(
                localplatform.start_emulator,
                client,
                learned.image,
                run_id,
                network,
                [localplatform.digest(secret)],
                None,
                None,
                self.queue_time,
            )
            cleanup.push("stop the emulator", lambda: _stop_emulator(client, emulator))
            try:
                make_sandbox()
            finally:
                learned.ca_pem = emulator.result().ca_pem


class SharedEmulator(_Emulated):
    """--platform shared, or a batch's emulator (`platform`): a network of the run's own that the
    emulator joins, so no other run's sandbox is on it."""

    def __init__(self, platform: localplatform.LocalPlatform | None) -> None:
        self.platform = platform

    def around_sandbox(
        self,
        client: docker.DockerClient,
        run_id: str,
        secret: Secret | None,
        learned: Learned,
        cleanup: Cleanup,
        make_sandbox: Callable[[], None],
    ) -> None:
        localplatform.remove_stale_networks(client)
        platform = self.platform or localplatform.shared(client)
        network = localplatform.join(client, platform, run_id)
        cleanup.push("remove the run's network", lambda: localplatform.remove_network(client, network))
        self._on(learned, network, platform)
        make_sandbox()


def plan_for(settings: RunSettings, platform: localplatform.LocalPlatform | None = None) -> Plan:
    """The plan of `settings`' mode; `platform`: an emulator a batch started for all its runs."""
    if platform is not None or settings.platform == "shared":
        return SharedEmulator(platform)
    if settings.platform == "local":
        return OwnEmulator(settings.queue_time)
    return Open() if settings.egress == "open" else Relayed()


def _stop_emulator(client: docker.DockerClient, emulator: Future[localplatform.LocalPlatform]) -> None:
    try:
        platform = emulator.result()
    except Exception:  # noqa: BLE001 - it failed to start and removed itself; its error is the run's
        return
    localplatform.stop(client, platform)
