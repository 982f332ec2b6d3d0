"""IBM Cloud calls the launcher makes with the key: delete it after use, or mint a short-lived token.

Deleting the API key after use is IBM's advice for untrusted machines; minting an access token
lets the sandbox work without ever holding the API key (`--token-mode short-lived`).

The calls need the key, so they run in a helper sandbox (qsandbox.inside.broker as its script) with
the sandbox's hardening: for the real platform with no network, IAM reached through the launcher's
relay under the run's allowlist; for the emulated one on the run's internal network. The key goes
in the start message, as for a run.

Deleting the key is not enough on its own: with the key, or a token of it, a script can make a new
API key for the same identity through IAM Identity (`POST /v1/apikeys` on iam.cloud.ibm.com, a host
the allowlist must let through), and that key would outlive the run. So with --revoke-after the
launcher lists the identity's API keys before the key goes in (`api_keys`), and the revocation
deletes every key of the identity that was not on that list, then the key, and names what it
deleted by IAM's ids (a key's name is the script's choice, and could carry the key).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass

import docker

from ...common import handoff, mux
from ...common.errors import QsandboxError, SandboxError
from ...common.handoff import AccessToken
from ...common.paths import HOME, TOKEN_FILE, WORKDIR
from ..core.credentials import Secret
from ..engine import sandbox
from . import stream
from .egress import allowlist
from .relay import Egress, Relay

log = logging.getLogger(__name__)

_SHOWN = re.compile(r"[^A-Za-z0-9:+._-]")  # IAM's ids and timestamps need no other character


@dataclass(frozen=True)
class Revocation:
    ok: bool
    detail: str
    made: int = 0  # API keys made during the run that were deleted too (named in detail)

    def line(self) -> str:
        if self.ok:
            works = "none of them works" if self.made else "it no longer works"
            return f"qsandbox: API key revoked ({self.detail}); {works} anywhere"
        return (
            f"qsandbox: REVOKING THE API KEY FAILED: {self.detail}; delete what is left yourself in IBM Cloud "
            "(Manage > Access (IAM) > API keys), the key itself also with `qsandbox revoke`"
        )


def _shown(value: object) -> str:
    """An IAM id or time for our line: IAM's characters only, at most 80 (it came back from a service)."""
    return _SHOWN.sub("?", str(value))[:80]


def _keys(entries: object) -> list[str]:
    if not isinstance(entries, list):
        return []
    return [
        _shown(e.get("id")) + (f" created {_shown(e['created_at'])}" if e.get("created_at") else "")
        for e in entries
        if isinstance(e, dict)
    ]


def _plural(n: int) -> str:
    return f"{n} API key{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class Broker:
    """The key broker of one run, one batch or one `qsandbox revoke`: where its helper sandbox runs
    (the emulator's network, or no network and the relay's rules) and with which key. Built once;
    each call is one short-lived helper sandbox (run_keyed_helper below)."""

    client: docker.DockerClient
    image: str
    secret: Secret
    network: str | None = None  # the emulator's network (--platform local, shared)
    ca_pem: str | None = None  # the CA the helper trusts (the emulator's, --ca-file)
    egress: Egress | None = None  # the relay's rules; None with no network: IBM's hosts only

    def __repr__(self) -> str:  # never print the key
        return f"Broker(image={self.image!r}, network={self.network!r}, key=<hidden>)"

    def _call(self, op: str, before: tuple[str, ...] | None = None) -> dict[str, object]:
        from ...common import handoff
        from ...common.paths import CA_FILE

        keep = ["-"] if before is None else list(before)  # "-": no list from before the run
        egress = self.egress
        if egress is None and self.network is None:  # the real platform: never the engine's open network
            egress = Egress(allowlist(()))
        try:
            out = run_keyed_helper(
                self.client,
                self.image,
                module="qsandbox.inside.broker",
                args=[op, *(keep if op == "revoke" else [])],
                message=handoff.Start(
                    token=self.secret.reveal(), channel="ibm_cloud", instance=None, ca_pem=self.ca_pem
                ),
                network=self.network,
                egress=egress,
                extra_env={"REQUESTS_CA_BUNDLE": str(CA_FILE)} if self.ca_pem else None,
            )
            result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])  # its one JSON object
            return result
        except (docker.errors.DockerException, QsandboxError, ValueError, IndexError) as e:
            return {"ok": False, "error": f"the key broker failed: {e}"}

    def mint(self) -> AccessToken:
        """An IAM access token for the key (short-lived mode); SandboxError if IAM refuses."""
        result = self._call("token")
        token, expiration = result.get("access_token"), result.get("expiration")
        if not result.get("ok") or not isinstance(token, str) or not isinstance(expiration, int):
            raise SandboxError(f"could not get an IAM access token for the key: {result.get('error')}")
        return AccessToken(token, expiration)

    def api_keys(self) -> tuple[str, ...]:
        """--revoke-after, before the key goes in: the ids of the API keys of the key's identity.
        SandboxError if IAM will not list them (keys made during the run could not be found then)."""
        result = self._call("keys")
        listed = result.get("keys")
        if not result.get("ok") or not isinstance(listed, list):
            raise SandboxError(
                f"--revoke-after: could not list the API keys of the key's identity ({result.get('error')}), so "
                "keys a script made during the run could not be found and deleted; nothing was sent into the sandbox"
            )
        return tuple(str(k.get("id")) for k in listed if isinstance(k, dict))

    def revoke(self, before: tuple[str, ...] | None = None) -> Revocation:
        """Delete the key; given `before` (api_keys' answer), every key of its identity made since first."""
        return revocation_of(self._call("revoke", before))


def revocation_of(result: dict[str, object]) -> Revocation:
    """What the broker's `revoke` answered, as the line the user reads (IAM's ids only)."""
    made, failed = _keys(result.get("made")), _keys(result.get("failed"))
    problems = []
    if failed:
        first = result["failed"][0]  # type: ignore[index]  # _keys found a list of dicts there
        problems.append(
            f"{_plural(len(failed))} made during the run NOT deleted: {', '.join(failed)} ({first.get('error')})"
        )
    if result.get("unchecked"):
        problems.append(f"API keys made during the run could not be looked for ({result['unchecked']})")
    if result.get("error"):
        problems.append(str(result["error"]))
    notes = []
    gone = result.get("gone")
    if isinstance(gone, list) and gone:
        notes.append(f"{_plural(len(gone))} of this identity deleted during the run: {', '.join(map(_shown, gone))}")
    also = f", and {_plural(len(made))} made during the run: {', '.join(made)}" if made else ""
    if result.get("ok"):
        return Revocation(True, "; ".join([f"id {_shown(result.get('id'))}{also}", *notes]), len(made))
    if not result.get("id"):  # the key itself was not even found
        return Revocation(False, "; ".join(problems))
    state = "NOT revoked" if result.get("error") else "revoked"
    key = f"the key itself (id {_shown(result['id'])}) {state}{also}"
    return Revocation(False, "; ".join([*problems, key, *notes]), len(made))


HELPER_OUTPUT_LIMIT = 1 << 20  # a helper answers in one line of JSON


def run_keyed_helper(
    client: docker.DockerClient,
    image: str,
    *,
    module: str,
    args: list[str],
    message: handoff.Start,
    network: str | None,
    egress: Egress | None,
    extra_env: dict[str, str] | None = None,
) -> bytes:
    """Run one of qsandbox's own modules as the script of a sandbox, with the key; return its stdout.

    The key broker's way: the container is a sandbox like a run's (same image, entry point and
    hardening, read back before anything is sent), the key goes in the start message (`message`, a
    handoff.Start), and with `egress` (a relay.Egress) it has no network, its HTTPS relayed by the
    launcher under the same rules as a run's; without, it joins `network` (the emulator's).
    """
    env = {
        "HOME": str(HOME),
        "QISKIT_IBM_TOKEN_FILE": str(TOKEN_FILE),
        "QSANDBOX_PREWARM": "0",
        "QSANDBOX_REDACT": "0",  # its answer may be a token the launcher asked for
        "QSANDBOX_CANCEL_ON_ABORT": "0",
        **(dict(Egress.environment()) if egress is not None else {}),
        **(extra_env or {}),
    }
    net = "none" if egress is not None else (network or "bridge")
    service = sandbox.start_service(
        client,
        image,
        sandbox.hardening_for(client),
        "the key broker",
        command=["run", "-m", module, *args],
        labels=sandbox.labels(sandbox.new_run_id()),
        environment=env,
        working_dir=str(WORKDIR),
        **sandbox.network_kwargs(net),
    )
    out = bytearray()
    att = service.attachment
    try:
        relay = Relay(mux.Link(att.send), egress or Egress(frozenset()))
        done = threading.Event()

        def beat() -> None:  # the entry point stops a sandbox that hears nothing for 20 s
            while not done.wait(2.0):
                try:
                    att.send(stream.ALIVE)
                except OSError:
                    return

        def collect(n: int, data: bytes) -> None:
            if n == 1 and len(out) < HELPER_OUTPUT_LIMIT:
                out.extend(data)
            elif n != 1:
                log.debug("key broker: %r", data[:500])

        try:
            stream.send_start(att, message, None)
            threading.Thread(target=beat, daemon=True).start()
            stream.pump(att, output=collect, relay=relay, receiver=None, say=lambda s: log.warning("%s", s))
        finally:
            done.set()
        assert service.removal is not None  # asked for by default
        service.removal.exit_code()
    finally:
        service.stop()
    return bytes(out)
