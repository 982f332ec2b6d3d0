"""The pieces of one run's life that are not its story: the engine-side clean-up stack, the signals
that become an abort, the abort itself, waiting for the exit, and waiting for a lost engine.

`launcher/run/run.py` tells the story with them; none of them knows which mode the run is in.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

import docker
import docker.errors

from ...common import handoff
from ...common.errors import EngineUnavailable, SandboxError
from ..core.credentials import KeySource, Secret
from ..core.settings import RunSettings
from ..engine import client as engine
from ..engine import sandbox
from . import stream

ABORT_GRACE = 30.0  # entry point: interrupt the script (5 s), then cancel jobs (<= 20 s)
REMOVAL_WAIT = 10.0
ENGINE_RETURN_WAIT = 60.0  # after losing the engine mid-run: how long to wait for it to confirm removal
SIGNAL_REASONS = {signal.SIGINT: "interrupt", signal.SIGTERM: "terminate", signal.SIGHUP: "hangup"}


class Gate(Protocol):
    """What `Run` needs of a batch's slots (threading.Semaphore has it)."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...

    def release(self) -> None: ...


class Abort(Exception):
    """Something from outside ends the run: `reason` is an `Ending`'s value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Started:
    """A sandbox created, verified, attached and started: what the later phases talk to."""

    container_id: str
    attachment: sandbox.Attachment
    removal: sandbox.Removal
    image_id: str | None = None  # the image it runs, as the engine names it (sha256:...)


class Signals:
    """Turn SIGINT, SIGTERM and SIGHUP into Abort in the main thread, for the run's duration."""

    def __enter__(self) -> Signals:
        self._old = {s: signal.getsignal(s) for s in SIGNAL_REASONS}
        for s, reason in SIGNAL_REASONS.items():
            signal.signal(s, self._handler(reason))
        return self

    @staticmethod
    def _handler(reason: str) -> Callable[..., None]:
        def handle(*_: object) -> None:
            raise Abort(reason)

        return handle

    def __exit__(self, *_: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


class Cleanup:
    """The engine-side clean-up of one run: each step registered as its object is acquired, run last-first.

    Like `contextlib.ExitStack`, so the teardown order is the reverse of the order of acquisition
    and cannot be forgotten. Unlike it, a step that fails because the engine went away stays on the
    stack: once the engine is back the remaining steps run again, and a step that already succeeded
    never runs twice.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.Lock()  # the sandbox may be prepared in a worker thread (at the prompt)

    def push(self, name: str, step: Callable[[], None]) -> None:
        with self._lock:
            self._steps.append((name, step))

    @property
    def pending(self) -> list[str]:
        """The steps still to run, in the order they will run."""
        with self._lock:
            return [name for name, _ in reversed(self._steps)]

    def unwind(self) -> None:
        while True:
            with self._lock:
                if not self._steps:
                    return
                _, step = self._steps[-1]
            step()
            with self._lock:
                self._steps.pop()


def make_sandbox(
    client: docker.DockerClient, settings: RunSettings, run_id: str, cleanup: Cleanup, local: ExitStack
) -> Started:
    """Create, verify (sandbox.create reads the hardening back), attach and start the sandbox, each
    registered for clean-up as it is made. The entry point then imports Qiskit and waits for the key."""
    container = sandbox.create(client, settings, run_id)
    container_id = cast(str, container.id)  # typed optional by the SDK; a created container has one
    running = threading.Event()
    removal: sandbox.Removal | None = None

    def remove() -> None:
        if removal is not None and removal.gone:
            return  # the engine answered the wait for its removal: gone (the run's leftovers check confirms)
        if running.is_set():
            ensure_gone(client, container_id)  # the daemon auto-removes it; confirm, force if not
        else:
            sandbox.destroy(client, container_id)

    cleanup.push("remove the sandbox", remove)
    removal = sandbox.Removal(client, container_id)  # waits from now: the exit code outlives auto-removal
    attachment = sandbox.attach(client, container_id)
    local.callback(attachment.close)  # EOF: the entry point ends the script and exits
    sandbox.start(container)
    running.set()
    image_id = container.attrs.get("Image") if container.attrs else None
    return Started(container_id, attachment, removal, image_id)


def wait_for_gate(gate: Gate, check_abort: Callable[[], None], local: ExitStack) -> float:
    """A batch's slot: wait for it (an abort still ends the wait), hold it until the launcher-side
    teardown; returns the seconds waited."""
    began = time.monotonic()
    while not gate.acquire(timeout=0.2):
        check_abort()
    local.callback(gate.release)  # before the engine-side teardown: the next one may start
    return time.monotonic() - began


def read_key_while(source: KeySource, prompt: Callable[[], str] | None, prepare: Callable[[], None]) -> Secret:
    """At the prompt, `prepare` (the sandbox) runs while the user types; its error is raised here,
    after the prompt, and whatever it registered is torn down with the rest."""
    error: list[BaseException] = []

    def work() -> None:
        try:
            prepare()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            error.append(e)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        secret = source.read(prompt)
    finally:
        worker.join()
    if error:
        raise error[0]
    return secret


def wait_for_end(done: threading.Event, timeout: float | None, check_abort: Callable[[], None]) -> None:
    """Until the output stream ends: an abort asked for ends the wait, and so does --timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done.wait(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))):
        check_abort()
        if deadline is not None and time.monotonic() >= deadline:
            raise Abort("timeout")


def unwind_confirmed(
    client: docker.DockerClient,
    unwind: Callable[[], None],
    lost: bool,
    err: BinaryIO,
    revoke_pending: Callable[[], bool],
) -> bool:
    """Every engine-side clean-up and the engine's confirmation (`unwind`); if the engine is lost
    (before, or now), wait for it to come back and finish. Returns whether it was lost."""
    if not lost:
        try:
            unwind()
        except Exception as e:
            if not engine.went_away(client, e):
                raise
            lost = True
    if lost:
        await_engine(client, unwind, err, revoke_pending)
    return lost


def await_engine(
    client: docker.DockerClient, teardown: Callable[[], None], err: BinaryIO, revoke_pending: Callable[[], bool]
) -> None:
    """The engine stopped answering mid-run: wait for it to come back, then finish the clean-up.

    An engine shutting down still answers for a moment, so the clean-up itself is retried until it
    goes through or the time is up.
    """
    err.write(
        f"qsandbox: lost the container engine mid-run; waiting up to {ENGINE_RETURN_WAIT:.0f} s for it "
        f"(the sandbox stops itself {handoff.HEARTBEAT_TIMEOUT:.0f} s after losing touch)\n".encode()
    )
    err.flush()
    end = time.monotonic() + ENGINE_RETURN_WAIT
    while True:
        if engine.wait_back(client, end - time.monotonic()):
            try:
                teardown()
                break
            except Exception as e:
                if not engine.went_away(client, e):
                    raise
        if time.monotonic() >= end:
            also = " and `qsandbox revoke` (--revoke-after could not run)" if revoke_pending() else ""
            raise EngineUnavailable(
                f"the container engine did not come back within {ENGINE_RETURN_WAIT:.0f} s: the sandbox "
                f"stopped itself and its key was in RAM only; run `qsandbox sweep`{also} once the engine is back"
            )
        time.sleep(0.5)
    err.write(b"qsandbox: the engine is back and confirms the clean-up\n")
    err.flush()


def exit_code(started: Started | None) -> int:
    """The script's exit code, as the engine reports it when the sandbox ends."""
    assert started is not None, "the sandbox is started before it is waited for"  # an invariant
    result: list[int | BaseException] = []

    def wait() -> None:
        try:
            result.append(started.removal.exit_code())
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread below
            result.append(e)

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    t.join(REMOVAL_WAIT)
    if not result:
        raise SandboxError("the engine did not report the sandbox's exit; it is being removed")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def abort(started: Started, reason: str, forced: threading.Event | None = None) -> None:
    """Ask the entry point to stop the script and cancel its jobs; force it if it takes too long.

    A second signal stops the wait; for a driven run (`forced` given) a second `Run.abort()` does.
    """
    with suppress(OSError):
        started.attachment.send(stream.control(handoff.encode_abort(reason)))
    if forced is not None:
        waiter = threading.Thread(target=started.removal.exit_code, daemon=True)
        waiter.start()
        end = time.monotonic() + ABORT_GRACE
        while waiter.is_alive() and not forced.is_set() and time.monotonic() < end:
            waiter.join(0.2)
        return
    try:
        with Signals():
            t = threading.Thread(target=started.removal.exit_code, daemon=True)
            t.start()
            t.join(ABORT_GRACE)
    except Abort:
        pass  # a second signal: stop waiting, force it below


def ensure_gone(client: docker.DockerClient, container_id: str) -> None:
    """Confirm with the engine that the container is gone; remove it ourselves if it is not."""
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        try:
            client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return
        time.sleep(0.05)
    sandbox.destroy(client, container_id)
