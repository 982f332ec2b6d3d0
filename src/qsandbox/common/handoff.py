"""The control messages between the launcher and the entry point: JSON objects, each the payload
of one CONTROL frame of `common.mux` (the one protocol on the attach stream). Both sides import
this module, so the format is defined once. The key travels only here: never in Env, Cmd, labels,
an archive upload, or a log.

Launcher -> entry point:
  {"type": "start", "token": KEY, "channel": ..., "instance": ..., "ca_pem": PEM or null, "output": BOOL,
   "lab_token": TOKEN or null}   (lab_token: `qsandbox lab`, JupyterLab's token, made by the launcher)
  followed at once by the INPUTS channel: a tar stream of the script and the inputs the user named
  (DATA frames, then EOF), which the entry point unpacks into the /work tmpfs as it arrives
  (nothing of the host is mounted).
  {"type": "abort", "reason": "interrupt" | "terminate" | "hangup" | "timeout"}
  {"type": "access_token", "access_token": JWT, "expiration": UNIX_TIME}   (short-lived mode)
  {"type": "alive"}   every HEARTBEAT_INTERVAL seconds once the script runs
Entry point -> launcher: the script's output on STDOUT and STDERR, the relay's channels, and after
the script has ended (its exit, an error, or an abort; not when the launcher is gone), if "output"
was asked for, the /output tmpfs as one plain tar stream on OUTPUT. Only the entry point (PID 1,
non-dumpable) writes frames: the script's own output reaches it on pipes.
EOF of stdin (the launcher died or closed the stream) means: kill the script and exit.
So does silence for HEARTBEAT_TIMEOUT seconds: EOF never arrives when the engine itself dies
(the stdin pipe is held by the runtime's shim, and the engine is not there to close it), and a
sandbox must not keep the key for as long as the engine stays down.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # not typing's: the entry point imports this module on every run (3 ms)
if TYPE_CHECKING:
    from typing import Any, NoReturn

MAX_MESSAGE = 64 * 1024  # a start message with a CA certificate is a few KiB
ABORT_REASONS = ("interrupt", "terminate", "hangup", "timeout")
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TIMEOUT = 20.0  # ten missed heartbeats: the launcher, or the engine between us, is gone


class HandoffError(ValueError):
    """A message that is not one of ours."""


class _Message:
    """A message: immutable and compared by value, like a frozen dataclass, but written out by hand.
    The entry point imports this module on every run, and dataclasses (through inspect, ast and dis)
    cost a no-op run 9 ms of CPU. Not a NamedTuple either: a tuple is iterable and JSON-serialisable,
    and a message holding the key must not print itself by any route."""

    __slots__: tuple[str, ...] = ()

    def __init__(self, **values: Any) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, values.pop(name))
        if values:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(values)}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values() == self._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> NoReturn:  # pickle and copy would carry every field, the key in the clear
        raise TypeError(f"{type(self).__name__} is neither pickled nor copied: it may hold the key")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__slots__)})"


class Start(_Message):
    __slots__ = ("ca_pem", "channel", "instance", "lab_token", "output", "token")
    token: str
    channel: str
    instance: str | None
    ca_pem: str | None
    output: bool  # send /output back when the script has ended
    # qsandbox lab: JupyterLab's token (the launcher made it and prints it in the lab's URL). Set, it
    # makes the run a lab: /work stays writable, the launcher's channels reach LAB_PORT, and what
    # changed under /work goes back instead of /output (inside/lab.py).
    lab_token: str | None

    def __init__(
        self,
        *,
        token: str,
        channel: str,
        instance: str | None,
        ca_pem: str | None = None,
        output: bool = False,
        lab_token: str | None = None,
    ) -> None:
        super().__init__(
            token=token, channel=channel, instance=instance, ca_pem=ca_pem, output=output, lab_token=lab_token
        )

    def __repr__(self) -> str:  # never print the token
        lab = ", lab_token=<hidden>" if self.lab_token else ""
        return f"Start(channel={self.channel!r}, instance={self.instance!r}, token=<hidden>{lab})"


class Abort(_Message):
    __slots__ = ("reason",)
    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason=reason)


class AccessToken(_Message):
    """Short-lived mode: the IAM access token the sandbox serves to its own client."""

    __slots__ = ("access_token", "expiration")
    access_token: str
    expiration: int

    def __init__(self, access_token: str, expiration: int) -> None:
        super().__init__(access_token=access_token, expiration=expiration)

    def __repr__(self) -> str:
        return f"AccessToken(expiration={self.expiration}, access_token=<hidden>)"


class Alive(_Message):
    """The launcher's heartbeat."""


ALIVE = b'{"type":"alive"}'
# /output: entries sent at most, and how deep (both sides keep to them; see inside/transfer.py).
MAX_OUTPUT_ENTRIES = 100_000
MAX_OUTPUT_DEPTH = 64


def encode_access_token(token: AccessToken) -> bytes:
    return _line({"type": "access_token", "access_token": token.access_token, "expiration": token.expiration})


def encode_start(start: Start) -> bytes:
    body = {
        "type": "start",
        "token": start.token,
        "channel": start.channel,
        "instance": start.instance,
        "ca_pem": start.ca_pem,
        "output": start.output,
    }
    if start.lab_token is not None:
        body["lab_token"] = start.lab_token
    return _line(body)


def encode_abort(reason: str) -> bytes:
    if reason not in ABORT_REASONS:
        raise ValueError(f"unknown abort reason {reason!r}")
    return _line({"type": "abort", "reason": reason})


def _line(body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
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
            output=body.get("output") is True,
            lab_token=body["lab_token"] if isinstance(body.get("lab_token"), str) else None,
        )
    if kind == "alive":
        return Alive()
    if kind == "abort" and body.get("reason") in ABORT_REASONS:
        return Abort(reason=body["reason"])
    if kind == "access_token" and isinstance(body.get("access_token"), str) and isinstance(body.get("expiration"), int):
        return AccessToken(access_token=body["access_token"], expiration=body["expiration"])
    raise HandoffError(f"unknown hand-off message type {kind!r}")
