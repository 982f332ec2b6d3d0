"""The messages the launcher sends into the container over the attached stdin stream.

One JSON object per line. Both sides import this module, so the format is defined once.
The key travels only here: never in Env, Cmd, labels, an archive upload, or a log.

Launcher -> entry point:
  {"type": "start", "token": KEY, "channel": ..., "instance": ..., "ca_pem": PEM or null,
   "inputs_size": N, "output_marker": HEX or null}
  followed at once by exactly N bytes: a tar archive of the script and the inputs the user named,
  which the entry point unpacks into the /work tmpfs (nothing of the host is mounted).
  {"type": "abort", "reason": "interrupt" | "terminate" | "hangup" | "timeout"}
  {"type": "access_token", "access_token": JWT, "expiration": UNIX_TIME}   (short-lived mode)
  {"type": "alive"}   every HEARTBEAT_INTERVAL seconds once the script runs
Entry point -> launcher, on its stdout, after the script has ended (its exit, an error, or an
abort; not when the launcher is gone): OUTPUT_BEGIN + marker + "\n", the /output tmpfs as a plain
tar archive in base64 lines, OUTPUT_END + marker + "\n". The marker is the run's own (sent in the
start message, after the script's interpreter was spawned: only the entry point, PID 1 and
non-dumpable, ever holds it); NUL never occurs in base64, so the frame cannot be mistaken for part
of the archive. The launcher accepts one such frame per run, plain tar only, within one budget.
EOF of stdin (the launcher died or closed the stream) means: kill the script and exit.
So does silence for HEARTBEAT_TIMEOUT seconds: EOF never arrives when the engine itself dies
(the stdin pipe is held by the runtime's shim, and the engine is not there to close it), and a
sandbox must not keep the key for as long as the engine stays down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE = 64 * 1024  # a start message with a CA certificate is a few KiB
ABORT_REASONS = ("interrupt", "terminate", "hangup", "timeout")
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TIMEOUT = 20.0  # ten missed heartbeats: the launcher, or the engine between us, is gone


class HandoffError(ValueError):
    """A message that is not one of ours."""


@dataclass(frozen=True)
class Start:
    token: str
    channel: str
    instance: str | None
    ca_pem: str | None = None
    inputs_size: int = 0
    output_marker: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"Start(channel={self.channel!r}, instance={self.instance!r}, token=<hidden>)"


@dataclass(frozen=True)
class Abort:
    reason: str


@dataclass(frozen=True)
class AccessToken:
    """Short-lived mode: the IAM access token the sandbox serves to its own client."""

    access_token: str
    expiration: int

    def __repr__(self) -> str:
        return f"AccessToken(expiration={self.expiration}, access_token=<hidden>)"


@dataclass(frozen=True)
class Alive:
    """The launcher's heartbeat."""


ALIVE = b'{"type":"alive"}\n'
OUTPUT_BEGIN = b"\x00qsandbox-output-begin:"
OUTPUT_END = b"\x00qsandbox-output-end:"
# /output: entries sent at most, and how deep (both sides keep to them; see inside/transfer.py).
MAX_OUTPUT_ENTRIES = 100_000
MAX_OUTPUT_DEPTH = 64
MAX_INPUTS = 1 << 32  # a sanity bound on the announced archive size; the launcher's --input-limit is lower


def _size(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INPUTS:
        raise HandoffError("bad inputs size")
    return value


def _marker(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.isalnum() or len(value) > 64:
        raise HandoffError("bad output marker")
    return value


def encode_access_token(token: AccessToken) -> bytes:
    return _line({"type": "access_token", "access_token": token.access_token, "expiration": token.expiration})


def encode_start(start: Start) -> bytes:
    body = {
        "type": "start",
        "token": start.token,
        "channel": start.channel,
        "instance": start.instance,
        "ca_pem": start.ca_pem,
        "inputs_size": start.inputs_size,
        "output_marker": start.output_marker,
    }
    return _line(body)


def encode_abort(reason: str) -> bytes:
    if reason not in ABORT_REASONS:
        raise ValueError(f"unknown abort reason {reason!r}")
    return _line({"type": "abort", "reason": reason})


def _line(body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    if len(data) > MAX_MESSAGE:
        raise HandoffError("hand-off message too large")
    return data


def decode(line: bytes) -> Start | Abort | AccessToken | Alive:
    if len(line) > MAX_MESSAGE:
        raise HandoffError("hand-off message too large")
    try:
        body = json.loads(line)
    except ValueError:
        raise HandoffError("hand-off message is not JSON") from None
    if not isinstance(body, dict):
        raise HandoffError("hand-off message is not an object")
    kind = body.get("type")
    if kind == "start" and isinstance(body.get("token"), str):
        return Start(
            token=body["token"],
            channel=str(body.get("channel") or "ibm_quantum_platform"),
            instance=body.get("instance"),
            ca_pem=body.get("ca_pem"),
            inputs_size=_size(body.get("inputs_size", 0)),
            output_marker=_marker(body.get("output_marker")),
        )
    if kind == "alive":
        return Alive()
    if kind == "abort" and body.get("reason") in ABORT_REASONS:
        return Abort(reason=body["reason"])
    if kind == "access_token" and isinstance(body.get("access_token"), str) and isinstance(body.get("expiration"), int):
        return AccessToken(access_token=body["access_token"], expiration=body["expiration"])
    raise HandoffError(f"unknown hand-off message type {kind!r}")
