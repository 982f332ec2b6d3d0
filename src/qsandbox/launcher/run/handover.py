"""The hand-off: the moment the key goes in. Everything the run needs from then on starts here, in
this order: the key broker (a short-lived token minted, the identity's keys listed for
--revoke-after), the live output and the relay, the start message with the key and the inputs, and
the launcher's side of the dead-man switch (the heartbeat, and the token refresher)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import BinaryIO

import docker

from ...common import handoff, mux
from ...common.redact import Redactor
from ..core.credentials import Secret
from ..core.settings import RunSettings
from ..engine import localplatform
from . import stream
from .keepalive import Heartbeat, Refresher
from .lifecycle import Started
from .live import LiveOutput
from .plans import Lab, Learned
from .relay import Egress, Relay
from .revoke import Broker, Revocation


@dataclass
class HandedOff:
    """What the rest of the run reads of the hand-off."""

    live: LiveOutput
    relay: Relay
    closing: Redactor  # masks the key in the closing line (the relay's refused names come from the script)
    to_revoke: Broker | None = None  # --revoke-after: armed, the run's revocation step revokes
    keys_before: tuple[str, ...] | None = None  # the identity's API keys before the key went in

    def revoke(self, say: Callable[[str], None]) -> Revocation | None:
        """--revoke-after, once, if armed: revoke, say how it went, and return that."""
        if self.to_revoke is None:
            return None
        revocation, self.to_revoke = self.to_revoke.revoke(self.keys_before), None
        say(revocation.line().removeprefix("qsandbox: "))
        return revocation


def hand_off(
    client: docker.DockerClient,
    settings: RunSettings,
    learned: Learned,
    started: Started | None,
    secret: Secret,
    *,
    out: BinaryIO,
    err: BinaryIO,
    done: threading.Event,
    say: Callable[[str], None],
    driven: bool,
    local: ExitStack,
    lab: Lab | None = None,
) -> HandedOff:
    """Start the live output, then send the key (or, short-lived, a minted token) into the sandbox.
    Launcher-side things it starts are registered on `local`."""
    assert started is not None, "the sandbox is started before the hand-off"  # an invariant
    short_lived = settings.token_mode == "short-lived"  # noqa: S105 - a mode name
    # The key broker: on the emulator's network for a rehearsal, else with no network, through the relay.
    network = None if learned.egress is not None else learned.network
    broker = Broker(client, learned.image, secret, network=network, ca_pem=learned.ca_pem, egress=learned.egress)
    minted = broker.mint() if short_lived else None
    before = broker.api_keys() if settings.revoke_after else None  # the identity's keys before the key goes in
    start = handoff.Start(
        # short-lived: a meaningless placeholder; the sandbox never sees the key
        token=localplatform.throwaway_key().reveal() if short_lived else secret.reveal(),
        channel=settings.channel,
        instance=settings.instance or learned.instance,
        ca_pem=learned.ca_pem,
        output=learned.receiver is not None,
        lab_token=lab.token if lab is not None else None,  # qsandbox lab: JupyterLab's token
    )
    secrets = [secret.reveal()] if settings.redact else None
    live = LiveOutput(out, err, secrets, learned.receiver, raw=settings.raw_output, done=done)
    # Anything the sandbox asks of the relay is refused unless this run relays (--network allowlist).
    relay = Relay(mux.Link(started.attachment.send), learned.egress or Egress(frozenset()))
    live.start(started.attachment, relay, say)
    result = HandedOff(live, relay, Redactor([secret.reveal()]))
    if settings.revoke_after:
        result.to_revoke, result.keys_before = broker, before  # any other key is made by the run, deleted too
    if minted is not None:
        refresher = Refresher(broker, started.attachment.send, minted.expiration, say)
        refresher.start()
        local.callback(refresher.stop.set)
    assert learned.inputs is not None, "inputs are collected when the run is checked"  # an invariant
    stream.send_start(started.attachment, start, learned.inputs)
    del start
    if minted is not None:
        started.attachment.send(stream.control(handoff.encode_access_token(minted)))
    if lab is not None:  # after the start message: the browser's channels may follow at once
        lab.serve(relay.channels, local, say)
    heartbeat = Heartbeat(started.attachment, err, suspend_note=not driven)
    heartbeat.start()
    local.callback(heartbeat.end)
    return result
