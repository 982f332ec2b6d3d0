"""Emulator settings, read from the environment of the emulator process.

The real API key never reaches the emulator: at most its SHA-256 digest does, so that the
emulator can accept exactly the key the user holds without being able to leak it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..common import platform_constants as constants

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


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
        )
