"""Emulator settings, read from the environment of the emulator process.

The real API key never reaches the emulator: at most its SHA-256 digest does, so that the
emulator can accept exactly the key the user holds without being able to leak it.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass

from ..common import platform_constants as constants

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


_PLAN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class Instance:
    """One service instance of the emulated account, with its plan (as Global Catalog gives it)."""

    crn: str
    name: str
    plan_id: str
    plan_name: str
    pricing_type: str

    @property
    def guid(self) -> str:
        return self.crn.split(":")[7]


def _extra_instance(plan: str) -> Instance:
    """An instance on ``plan``, with ids derived from the plan's name (stable across restarts)."""
    guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"qsandbox:instance:{plan}"))
    return Instance(
        crn=f"crn:v1:bluemix:public:quantum-computing:us-east:a/{constants.ACCOUNT_ID}:{guid}::",
        name=f"qsandbox-{plan}",
        plan_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"qsandbox:plan:{plan}")),
        plan_name=plan,
        pricing_type="paygo",
    )


@dataclass(frozen=True)
class PlatformConfig:
    """What the emulated platform accepts and offers.

    ``key_sha256`` empty means "open" mode: any well-formed key is accepted (until it is
    deleted through the IAM Identity API), for rehearsing against a long-lived emulator.
    """

    key_sha256: tuple[str, ...] = ()
    instance_crn: str = constants.INSTANCE_CRN
    backends: tuple[str, ...] = constants.DEFAULT_BACKENDS
    token_ttl: int = constants.DEFAULT_TOKEN_TTL
    queue_time: float = 0.0
    extra_plans: tuple[str, ...] = ()
    """More instances in the account, one per plan name (e.g. IBM's test accounts' ``internal``),
    for rehearsing a script's instance selection (``plans_preference``, ``instance=`` by name)."""

    def __post_init__(self) -> None:
        for digest in self.key_sha256:
            if not _HEX64.match(digest):
                raise ValueError("QSANDBOX_PLATFORM_KEY_SHA256 must hold hex SHA-256 digests")
        if not self.backends:
            raise ValueError("at least one backend is needed")
        if self.token_ttl < 60:
            raise ValueError("QSANDBOX_PLATFORM_TOKEN_TTL must be at least 60 seconds")
        if not 0 <= self.queue_time <= 86400:
            raise ValueError("QSANDBOX_PLATFORM_QUEUE_TIME must be between 0 and 86400 seconds")
        if len(self.instance_crn.split(":")) < 8:
            raise ValueError("QSANDBOX_PLATFORM_INSTANCE_CRN is not a CRN")
        for plan in self.extra_plans:
            if not _PLAN.match(plan) or plan == constants.PLAN_NAME.lower():
                raise ValueError(
                    f"QSANDBOX_PLATFORM_EXTRA_PLANS: {plan!r} is not a new plan name (lower case letters, digits, -)"
                )

    @property
    def instances(self) -> tuple[Instance, ...]:
        """The account's instances, the configured one first."""
        first = Instance(
            self.instance_crn,
            constants.INSTANCE_NAME,
            constants.PLAN_ID,
            constants.PLAN_NAME,
            constants.PLAN_PRICING_TYPE,
        )
        return (first, *(_extra_instance(plan) for plan in self.extra_plans))

    def instance(self, crn_or_guid: str) -> Instance | None:
        return next((i for i in self.instances if crn_or_guid in (i.crn, i.guid)), None)

    @property
    def open_mode(self) -> bool:
        return not self.key_sha256

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> PlatformConfig:
        env = os.environ if environ is None else environ
        return cls(
            key_sha256=tuple(d.lower() for d in _csv(env.get("QSANDBOX_PLATFORM_KEY_SHA256"))),
            instance_crn=env.get("QSANDBOX_PLATFORM_INSTANCE_CRN") or constants.INSTANCE_CRN,
            backends=_csv(env.get("QSANDBOX_PLATFORM_BACKENDS")) or constants.DEFAULT_BACKENDS,
            token_ttl=int(env.get("QSANDBOX_PLATFORM_TOKEN_TTL") or constants.DEFAULT_TOKEN_TTL),
            queue_time=float(env.get("QSANDBOX_PLATFORM_QUEUE_TIME") or 0.0),
            extra_plans=_csv(env.get("QSANDBOX_PLATFORM_EXTRA_PLANS")),
        )
