"""IBM Cloud calls the launcher makes with the key: delete it after use, or mint a short-lived token.

Deleting the API key after use is IBM's advice for untrusted machines; minting an access token
lets the sandbox work without ever holding the API key (`--token-mode short-lived`).

The calls need the key, so they run in a helper container (qsandbox.inside.broker) with the sandbox's
hardening, on the network the run used: the internet for the real platform, the run's internal
network for the emulated one. The key goes in over the attached stdin, as for the sandbox.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import docker

from ..common.errors import QsandboxError, SandboxError
from . import sandbox
from .credentials import Secret
from .settings import module_entrypoint

BROKER = module_entrypoint("qsandbox.inside.broker")


@dataclass(frozen=True)
class Revocation:
    ok: bool
    detail: str

    def line(self) -> str:
        if self.ok:
            return f"qsandbox: API key revoked ({self.detail}); it no longer works anywhere"
        return (
            f"qsandbox: REVOKING THE API KEY FAILED: {self.detail}; delete it yourself in IBM Cloud "
            "(Manage > Access (IAM) > API keys) or with `qsandbox revoke`"
        )


def _broker(
    client: docker.DockerClient,
    image: str,
    op: str,
    secret: Secret,
    network: str | None,
    ca_pem: str | None,
    env: dict[str, str] | None,
) -> dict[str, object]:
    request = json.dumps({"op": op, "token": secret.reveal(), "ca_pem": ca_pem}).encode() + b"\n"
    try:
        out = sandbox.run_helper(
            client,
            image,
            entrypoint=BROKER,
            command=[],
            stdin=request,
            hardening=sandbox.hardening_for(client),
            network=network or "bridge",
            environment=env,  # the egress proxy's variables: the broker follows the run's allowlist
        )
        result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])  # the broker's one JSON object
        return result
    except (docker.errors.DockerException, QsandboxError, ValueError, IndexError) as e:
        return {"ok": False, "error": f"the key broker failed: {e}"}


def mint(
    client: docker.DockerClient,
    image: str,
    secret: Secret,
    *,
    network: str | None,
    ca_pem: str | None,
    env: dict[str, str] | None = None,
) -> dict[str, object]:
    """An IAM access token for the key (short-lived mode); raises SandboxError if IAM refuses."""
    result = _broker(client, image, "token", secret, network, ca_pem, env)
    if not result.get("ok"):
        raise SandboxError(f"could not get an IAM access token for the key: {result.get('error')}")
    return result


def revoke(
    client: docker.DockerClient,
    image: str,
    secret: Secret,
    *,
    network: str | None,
    ca_pem: str | None,
    env: dict[str, str] | None = None,
) -> Revocation:
    result = _broker(client, image, "revoke", secret, network, ca_pem, env)
    if result.get("ok"):
        return Revocation(True, f"id {result.get('id')}")
    return Revocation(False, str(result.get("error")))
