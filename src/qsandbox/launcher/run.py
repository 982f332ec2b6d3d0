"""One `qsandbox run`, end to end: key, sandbox, hand-off, live output, teardown, verification.

Every exit path ends in the same `finally`: the container is gone (the daemon's auto-remove, or
our forced removal), and the engine is asked to confirm that nothing labelled with this run is
left. Ctrl-C, SIGTERM and SIGHUP become an abort message to the entry point, which interrupts the
script and cancels its Runtime jobs; SIGKILL of the launcher closes the attach stream, which the
entry point treats as a dead-man switch.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, nullcontext, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

import docker
import docker.errors

from ..common import handoff, mux
from ..common.errors import (
    EngineUnavailable,
    ExitCode,
    ImageMissing,
    PreflightRefused,
    QsandboxError,
    SandboxError,
    UsageError,
)
from ..common.paths import CA_FILE
from ..common.platform_constants import INSTANCE_CRN
from ..common.redact import Redactor
from ..common.text import shown
from . import deps, egress, engine, image, localplatform, preflight, sandbox, stream, transfer
from .credentials import KeySource, Secret
from .ending import Ending
from .relay import Egress, Relay, parse_connect_to
from .revoke import Broker, Revocation
from .settings import IMAGE, Hardening, RunSettings
from .terminal import ControlFilter, end_line

if TYPE_CHECKING:
    from .lab import LabPlan  # qsandbox lab's seam (see Run.__init__)

ABORT_GRACE = 30.0  # entry point: interrupt the script (5 s), then cancel jobs (<= 20 s)
REMOVAL_WAIT = 10.0
ENGINE_RETURN_WAIT = 60.0  # after losing the engine mid-run: how long to wait for it to confirm removal
SIGNAL_REASONS = {signal.SIGINT: "interrupt", signal.SIGTERM: "terminate", signal.SIGHUP: "hangup"}


@dataclass
class RunResult:
    run_id: str
    exit_code: int
    duration: float
    leftovers: list[str] = field(default_factory=list)
    ending: Ending = Ending.EXITED
    revocation: Revocation | None = None  # --revoke-after's outcome, when it ran
    egress_refused: str = ""  # what the relay refused, "host:port xN, ..." (redacted)
    egress_unreachable: str = ""  # allowed hosts this machine could not connect to, the same way
    started_at: datetime | None = None  # when the run began (UTC), for reports
    image_id: str | None = None  # the image the sandbox ran, as the engine names it (sha256:...)

    @property
    def aborted(self) -> str | None:
        """What ended the run from outside the script (the closing line's words), if anything did."""
        return self.ending.said if self.ending.aborted else None

    def summary(self) -> str:
        state = (
            "container and secret destroyed (engine confirms)"
            if not self.leftovers
            else "LEFT BEHIND: " + ", ".join(self.leftovers) + " (run `qsandbox sweep`)"
        )
        why = f" ({self.aborted})" if self.aborted else ""
        refused = f"; egress refused: {self.egress_refused} (allow with --allow-host)" if self.egress_refused else ""
        if self.egress_unreachable:
            refused += f"; unreachable from this machine: {self.egress_unreachable}"
        return f"qsandbox: run {self.run_id} exit {self.exit_code}{why} in {self.duration:.2f}s; {state}{refused}"


class Gate(Protocol):
    """What `Run` needs of a batch's slots (threading.Semaphore has it)."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class EngineChecked:
    """The engine as `Run.check` finds it: a batch checks it once and hands this to each of its runs."""

    client: docker.DockerClient
    hardening: Hardening  # fitted to the engine (and read back per sandbox all the same)


def check_engine(settings: RunSettings, err: BinaryIO) -> EngineChecked:
    """Connect, preflight (warnings said once, or refused) and the image: what every run checks first."""
    client = engine.connect()
    checked = _preflight(client, settings, err)
    _check_image(client, checked.image)
    return EngineChecked(client, checked.hardening)


class _Abort(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Prepared:
    container_id: str
    attachment: sandbox.Attachment
    removal: sandbox.Removal


def _on_platform(settings: RunSettings, network: str, instance: str) -> RunSettings:
    """The sandbox joins the emulator's network and trusts its CA (written by the entry point)."""
    return replace(
        settings,
        network=network,
        instance=settings.instance or instance,
        extra_env=(*settings.extra_env, ("REQUESTS_CA_BUNDLE", str(CA_FILE)), ("SSL_CERT_FILE", str(CA_FILE))),
    )


def _preflight(client: docker.DockerClient, settings: RunSettings, err: BinaryIO) -> RunSettings:
    """Warn (or refuse, --strict) about the host; fit the hardening to the engine, or refuse."""
    info = engine.describe(client)
    found = preflight.findings(info)
    warnings = [f.warning for f in found if f.warning]
    if settings.strict and warnings:
        raise PreflightRefused(f"refused (--strict): {warnings[0]}")
    if info.podman and settings.platform != "ibm":
        # Its isolation rests on a Docker bridge option (inhibit_ipv4) that Podman does not have.
        raise PreflightRefused(f"--platform {settings.platform} needs Docker Engine: on {info.kind} use --platform ibm")
    hardening = settings.hardening.for_engine(info)
    if not hardening.limits:
        if not settings.allow_no_limits:
            raise PreflightRefused(
                f"{info.kind} on cgroup v1 cannot apply memory, pids or CPU limits, so nothing was started: "
                "re-run with --allow-no-limits to go without them, or use an engine on cgroup v2"
            )
        if any(f.name == "host swap" and f.warning for f in found):
            raise PreflightRefused(
                "--allow-no-limits is refused while host swap is on: without a memory limit the key's "
                "tmpfs pages could be swapped to disk; turn swap off (swapoff -a)"
            )
        if any(f.name == "engine host swap" and not f.checked for f in found):
            raise PreflightRefused(
                "--allow-no-limits is refused on a remote engine: its host's swap cannot be checked from here, "
                "and without a memory limit the key's tmpfs pages could be swapped to disk there"
            )
        warnings.append(f"{info.kind} on cgroup v1: no memory, pids or CPU limits (--allow-no-limits)")
    for w in warnings:
        err.write(f"qsandbox: warning: {w}\n".encode())
    for f in found:  # a remote engine's host: what could not be checked is said, not passed as fine
        if f.unchecked:
            err.write(f"qsandbox: {f.unchecked}\n".encode())
    err.flush()
    return replace(settings, hardening=hardening)


class _Refresher(threading.Thread):
    """Short-lived mode: mint a fresh access token before the current one expires, and send it in.

    A failure is retried; the first one is said on stderr, and again once the token is about to
    expire (the script's calls fail with 401 after that), never silently."""

    WARN_BEFORE = 60.0  # seconds before expiry: say it again if minting still fails
    MIN_WAIT = 5.0  # seconds between tries, at least

    def __init__(self, broker: Broker, prepared: _Prepared, expiration: int, say: Callable[[str], None]) -> None:
        super().__init__(daemon=True)
        self.broker, self.prepared, self.expiration, self.say = broker, prepared, expiration, say
        self.stop = threading.Event()

    def run(self) -> None:
        failing, warned = False, False
        while not self.stop.wait(max(self.MIN_WAIT, (self.expiration - time.time()) * (0.2 if failing else 0.8))):
            try:
                token = self.broker.mint()
                self.prepared.attachment.send(stream.control(handoff.encode_access_token(token)))
            except (QsandboxError, OSError) as e:
                left = self.expiration - time.time()
                if not failing:
                    self.say(f"could not renew the IAM access token ({e}); retrying, this one lasts {left:.0f} s")
                elif left < self.WARN_BEFORE and not warned:
                    self.say(
                        f"the IAM access token expires in {max(0.0, left):.0f} s and could not be renewed: the "
                        "script's calls to IBM will be refused (401) after that"
                    )
                    warned = True
                failing = True
                continue
            if failing:
                self.say("the IAM access token was renewed")
            self.expiration, failing, warned = token.expiration, False, False


class _Heartbeat(threading.Thread):
    """Tell the entry point every few seconds that the launcher, and the engine between us, live.

    EOF ends the sandbox when the launcher dies; silence ends it when the engine dies (no EOF then).
    """

    def __init__(self, attachment: sandbox.Attachment, err: BinaryIO, *, suspend_note: bool = True) -> None:
        super().__init__(daemon=True)
        self.attachment, self.err = attachment, err
        self.stop = threading.Event()
        # Called in the main thread: Ctrl-Z stops the heartbeat too, so say what that means. A run
        # driven by a batch is not in the main thread (signal.signal would raise): no note then.
        self._suspend_note = suspend_note
        if suspend_note:
            self._old_tstp = signal.signal(signal.SIGTSTP, self._on_suspend)

    def _on_suspend(self, *_: object) -> None:
        self.err.write(
            f"qsandbox: suspended; the sandbox stops the script if the launcher stays stopped for "
            f"{handoff.HEARTBEAT_TIMEOUT:.0f} s: `fg` before that to go on\n".encode()
        )
        self.err.flush()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stops here until SIGCONT
        signal.signal(signal.SIGTSTP, self._on_suspend)

    def end(self) -> None:
        """Stop beating and give Ctrl-Z back its old meaning (main thread)."""
        self.stop.set()
        if self._suspend_note:
            signal.signal(signal.SIGTSTP, self._old_tstp)

    def run(self) -> None:
        while not self.stop.wait(handoff.HEARTBEAT_INTERVAL):
            try:
                self.attachment.send(stream.ALIVE)
            except OSError:
                return


def _check_image(client: docker.DockerClient, name: str) -> None:
    """The image is there; this version's own is also built from these sources (its qsandbox.context
    label), so a development install never runs a stale entry point (a lab's --image is checked by
    image.check_lab_image)."""
    if name == IMAGE:
        image.check(client, name)
        return
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        raise ImageMissing(
            f"image {name} is not on this engine: run `qsandbox build` (this qsandbox version needs its own image)"
        ) from None


def isatty(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class _Pump:
    """Copies the script's output to ours, live, until the stream ends: the key masked, and on a
    terminal (unless --raw-output) nothing but text, newlines, tabs and colours (terminal.py). The
    stream's other channels go to the relay, and /output to `receiver` (launcher/stream.py)."""

    def __init__(
        self,
        out: BinaryIO,
        err: BinaryIO,
        secrets: list[str] | None,
        receiver: transfer.OutputReceiver | None,
        *,
        raw: bool,
    ) -> None:
        self.targets = {1: out, 2: err}
        self.redactors = {n: Redactor(secrets) for n in self.targets} if secrets is not None else {}
        # Two filters per terminal: the first before masking (a control character between two halves
        # of the key hides nothing), the second last, so that a colour sequence the redactor holds
        # back in part never reaches the terminal half-made, to be finished by the other stream.
        self.filters = {n: (ControlFilter(), ControlFilter()) for n, t in self.targets.items() if not raw and isatty(t)}
        self.receiver = receiver
        self.last = "\n"  # the last character of the script's that reached a terminal of ours
        self.dirty = False  # the script's output reached our stderr's terminal since our last line
        self.done = threading.Event()

    def _write(self, stream: int, data: bytes) -> None:
        if stream in self.filters:
            data = self.filters[stream][0].feed(data)
        if stream in self.redactors:
            data = self.redactors[stream].feed(data)
        if stream in self.filters:
            data = self.filters[stream][1].feed(data)
            self.last = self.filters[stream][1].last
        self._emit(stream, data)

    def _emit(self, stream: int, data: bytes) -> None:
        if not data:
            return
        self.dirty = True
        try:
            self.targets[stream].write(data)
            self.targets[stream].flush()
        except (OSError, ValueError):  # our terminal is gone (SIGHUP): keep draining
            pass

    def run(self, attachment: sandbox.Attachment, relay: Relay, say: Callable[[str], None]) -> None:
        try:
            stream.pump(attachment, output=self._write, relay=relay, receiver=self.receiver, say=say)
        finally:
            if self.receiver:
                self.receiver.flush()
            for n in self.targets:
                tail = self.filters[n][0].flush() if n in self.filters else b""
                if n in self.redactors:
                    tail = self.redactors[n].feed(tail) + self.redactors[n].flush()
                if n in self.filters:
                    tail = self.filters[n][1].feed(tail) + self.filters[n][1].flush()
                    self.last = self.filters[n][1].last
                self._emit(n, tail)
            self.done.set()

    def fresh_line(self) -> None:
        """Before qsandbox's own lines after the script's: colours reset, and a line of its own."""
        if self.dirty and isatty(self.targets[2]):
            self._emit(2, end_line(self.last))
            self.last, self.dirty = "\n", False


class _Signals:
    """Turn SIGINT, SIGTERM and SIGHUP into _Abort in the main thread, for the run's duration."""

    def __enter__(self) -> _Signals:
        self._old = {s: signal.getsignal(s) for s in SIGNAL_REASONS}
        for s, reason in SIGNAL_REASONS.items():
            signal.signal(s, self._handler(reason))
        return self

    @staticmethod
    def _handler(reason: str) -> Callable[..., None]:
        def handle(*_: object) -> None:
            raise _Abort(reason)

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


class Run:
    """One `qsandbox run`, as its phases: check, prepare, hand off, supervise, tear down, confirm.

    `execute()` tells the story. What each phase acquires, it registers for clean-up at once:
    launcher-side things (the attach stream, the heartbeat, the token refresher, a lent --output
    directory) on an ExitStack, engine-side things (sandbox, revocation, emulator, network) on a
    `Cleanup`, which the ExitStack runs between the two, so the order of teardown is the one place
    below where things are acquired, reversed.
    """

    def __init__(
        self,
        settings: RunSettings,
        source: KeySource,
        *,
        out: BinaryIO,
        err: BinaryIO,
        prompt: Callable[[], str] | None,
        driven: bool = False,
        platform: localplatform.LocalPlatform | None = None,
        gate: Gate | None = None,
        checked: EngineChecked | None = None,
        lab: LabPlan | None = None,
    ) -> None:
        """`driven`: a batch runs this in a worker thread; its main thread owns the signals and calls
        `abort()` instead (signal handlers can only be set in the main thread). `platform`: an
        emulator the caller started and stops (one per batch), used as `--platform shared` uses its own.
        `gate`: the sandbox is made ready, then waits for a slot before the key goes in (a batch
        prepares the next sandboxes while others run); the wait is not part of the duration.
        `checked`: the engine as the batch found it, instead of connecting and preflighting again.
        `lab`: qsandbox lab's seam (launcher/lab.py): its inputs, its token in the start message, and
        its listener once the start message is out; None for every other run."""
        self.lab = lab  # qsandbox lab: the seam (launcher/lab.py)
        self.local = settings.platform in ("local", "shared")
        self.driven, self.platform = driven, platform
        self._abort_reason: str | None = None  # asked for by abort()
        self._abort_forced = threading.Event()  # asked twice: stop waiting for the entry point
        self.gate, self.checked = gate, checked
        self._waited = 0.0  # seconds spent ready, waiting for the gate
        self.gate_held = False  # it took a slot of the gate (and released it when it ended)
        self.settings = replace(settings, prewarm=self.local or source.interactive)
        self.source, self.out, self.err, self.prompt = source, out, err, prompt
        self.cleanup = Cleanup()
        self.run_id = sandbox.new_run_id()
        self.prepared: _Prepared | None = None
        self.ca_pem: str | None = None
        self.code = int(ExitCode.TOOL)
        self.ending: Ending | None = None  # set when something from outside ends the run
        self.lost = False  # the engine stopped answering mid-run (restarted, crashed)
        self.revocation: Revocation | None = None
        self.left: list[str] = []  # what the engine still has of this run, after teardown
        self._key_read = False
        self._started = False  # the sandbox's container was started (the daemon will auto-remove it)
        self._to_revoke: Broker | None = None
        self._done = threading.Event()  # the output stream ended
        self.inputs: transfer.Inputs
        self.receiver: transfer.OutputReceiver | None = None
        self.started_at: datetime | None = None
        self.image_id: str | None = None
        self.egress: Egress | None = None  # --platform ibm: where the relay lets the sandbox and the broker go
        self.relay: Relay | None = None
        self._closing = Redactor([])
        self._pump: _Pump | None = None

    # -- the story ------------------------------------------------------------------------------

    def execute(self) -> RunResult:
        self.started_at = datetime.now(UTC)
        self.check()
        began = time.monotonic()
        with ExitStack() as local:
            local.callback(self.tear_down)  # engine side, after the launcher-side steps below
            signals: AbstractContextManager[object] = nullcontext() if self.driven else _Signals()
            with signals:
                try:
                    secret = self.prepare(local)
                    self._wait_for_gate(local)
                    self._check_abort()  # before the key goes in: closing the stream ends the sandbox
                    self._key_read = True
                    self.hand_off(secret, local)
                    del secret
                    self.code = self.supervise()
                except _Abort as a:
                    self.ending = Ending(a.reason)
                    self.code = int(self.ending.exit_code or ExitCode.TOOL)
                    if self.prepared is not None and self._key_read:  # else closing the stream ends it
                        _abort(self.prepared, a.reason, self._abort_forced if self.driven else None)
                        self._done.wait(REMOVAL_WAIT)  # the rest of the output, and /output, arrive
                except Exception as e:
                    if not engine.went_away(self.client, e):
                        raise
                    self.lost = True
        return self.confirm(time.monotonic() - began - self._waited)

    @property
    def handed_off(self) -> bool:
        """Whether the key went in (so the script ran, or was about to)."""
        return self._key_read

    def _wait_for_gate(self, local: ExitStack) -> None:
        if self.gate is None:
            return
        began = time.monotonic()
        while not self.gate.acquire(timeout=0.2):
            self._check_abort()
        self.gate_held = True
        local.callback(self.gate.release)  # before the engine-side teardown: the next one may start
        self._waited = time.monotonic() - began

    def abort(self, reason: str) -> None:
        """End this run as SIGINT/SIGTERM/SIGHUP or --timeout would (`reason`: a key of REASON_EXIT).

        For a driven run, from the thread that owns the signals; a second call stops waiting for
        the entry point's clean-up and forces the sandbox's removal, as a second Ctrl-C does.
        """
        if self._abort_reason is not None:
            self._abort_forced.set()
            return
        self._abort_reason = reason

    def _check_abort(self) -> None:
        if self._abort_reason is not None:
            raise _Abort(self._abort_reason)

    # -- the phases -----------------------------------------------------------------------------

    def check(self) -> None:
        """Everything that can refuse before anything starts, in the order a user needs it: the key
        source, then what the user gave (inputs, --output, the CA, the relay's rules), then the engine
        (preflight, image)."""
        if not (self.local and self.source.interactive):
            self.source.check()
        self._check_egress()
        s = self.settings
        self.inputs = (  # qsandbox lab: the seam (launcher/lab.py)
            self.lab.collect(s)
            if self.lab
            else transfer.collect(s.script, workdir=s.workdir, includes=s.includes, limit=s.input_limit)
        )
        for note in self.inputs.left_out:
            self._say(f"not sent into the sandbox: {shown(note)}")
        if s.output is not None:
            transfer.check_output(s.output, merge=s.output_merge)
            self.receiver = transfer.OutputReceiver(
                s.output, s.hardening.output_size, self._say, keep_modes=s.output_keep_modes
            )
        if self.checked is None:
            self.client = engine.connect()
            self.settings = _preflight(self.client, self.settings, self.err)
            _check_image(self.client, self.settings.image)
        else:  # a batch checked the engine once for all its runs (one client, fewer round trips)
            self.client = self.checked.client
            self.settings = replace(self.settings, hardening=self.checked.hardening)
        s = self.settings
        self.settings = replace(s, hardening=replace(s.hardening, work_size=self.inputs.tmpfs_size))
        if self.settings.image != IMAGE:  # --image: a lab's own, built FROM ours
            image.check_lab_image(self.client, self.settings.image)
        if self.settings.needs is not None:  # built (once) or reused here, before the key is read
            # By the id it verified (its use recorded by tag): a tag moved after the check changes nothing.
            derived = deps.ensure_image(self.client, self.settings.image, self.settings.needs, self._say)
            self.settings = replace(self.settings, image=derived)
        else:
            deps.record_use(self.settings.image)  # for `qsandbox images` (last use) and --prune

    def prepare(self, local: ExitStack) -> Secret:
        """Read the key and make the sandbox ready (with its platform, for rehearsals); returns the key."""
        client, settings = self.client, self.settings
        if not self.local:
            if self.source.interactive:
                secret = self._read_key_while_preparing(local)
            else:
                secret = self.source.read()  # bad input fails here, before anything starts
                self._refuse_key_in_inputs(secret)
                self._prepare_sandbox(local)
            return secret
        # A rehearsal needs no real key: without a source, a throwaway one is made.
        secret = localplatform.throwaway_key() if self.source.interactive else self.source.read()
        self._refuse_key_in_inputs(secret)
        localplatform.remove_stale_networks(client)
        if self.platform is not None or settings.platform == "shared":
            platform = self.platform or localplatform.shared(client)
            # A network of this run's own that the emulator joins: no other run's sandbox is on it.
            network = localplatform.join(client, platform, self.run_id)
            self.cleanup.push("remove the run's network", lambda: localplatform.remove_network(client, network))
            self.settings = _on_platform(settings, network, platform.instance)
            self._prepare_sandbox(local)
        else:
            network = localplatform.create_network(client, self.run_id)
            self.cleanup.push("remove the run's network", lambda: localplatform.remove_network(client, network))
            self.settings = _on_platform(settings, network, INSTANCE_CRN)
            # The emulator starts while the sandbox is made and imports Qiskit.
            with ThreadPoolExecutor(1) as pool:
                emulator = pool.submit(
                    localplatform.start_emulator,
                    client,
                    settings.image,
                    self.run_id,
                    network,
                    [localplatform.digest(secret)],
                    None,
                    None,
                    settings.queue_time,
                )
                self.cleanup.push("stop the emulator", lambda: _stop_emulator(client, emulator))
                try:
                    self._prepare_sandbox(local)
                finally:
                    platform = emulator.result()
        self.ca_pem = platform.ca_pem
        return secret

    def hand_off(self, secret: Secret, local: ExitStack) -> None:
        """Start the live output, then send the key (or, short-lived, a minted token) into the sandbox."""
        client, settings, prepared = self.client, self.settings, self._ready()
        short_lived = settings.token_mode == "short-lived"  # noqa: S105 - a mode name
        self._closing = Redactor([secret.reveal()])  # for the closing line's refused hosts
        # The key broker: on the emulator's network for a rehearsal, else with no network, through the relay.
        broker = Broker(
            client,
            settings.image,
            secret,
            network=settings.network if self.egress is None else None,
            ca_pem=self.ca_pem,
            egress=self.egress,
        )
        minted = broker.mint() if short_lived else None
        before = broker.api_keys() if settings.revoke_after else None  # the identity's keys before the key goes in
        start = handoff.Start(
            # short-lived: a meaningless placeholder; the sandbox never sees the key
            token=localplatform.throwaway_key().reveal() if short_lived else secret.reveal(),
            channel=settings.channel,
            instance=settings.instance,
            ca_pem=self.ca_pem,
            output=self.receiver is not None,
            lab_token=self.lab.token if self.lab else None,  # qsandbox lab: the seam (launcher/lab.py)
        )
        refresher = _Refresher(broker, prepared, minted.expiration, self._say) if minted is not None else None
        self._pump = _Pump(
            self.out, self.err, [secret.reveal()] if settings.redact else None, self.receiver, raw=settings.raw_output
        )
        self._pump.done = self._done
        # Anything the sandbox asks of the relay is refused unless this run relays (--network allowlist).
        self.relay = Relay(mux.Link(prepared.attachment.send), self.egress or Egress(frozenset()))
        threading.Thread(target=self._pump.run, args=(prepared.attachment, self.relay, self._say), daemon=True).start()
        if settings.revoke_after:
            self._to_revoke = broker  # armed: the revocation step registered in _prepare_sandbox runs
            self._keys_before = before  # keys the identity had; any other one is made by the run and deleted too
        if refresher is not None:
            refresher.start()
            local.callback(refresher.stop.set)
        stream.send_start(prepared.attachment, start, self.inputs)
        del start
        if minted is not None:
            prepared.attachment.send(stream.control(handoff.encode_access_token(minted)))
        if self.lab:  # qsandbox lab: the seam (launcher/lab.py); after the start message, as channels may follow
            self.lab.serve(self.relay.channels, local, self._say)
        heartbeat = _Heartbeat(prepared.attachment, self.err, suspend_note=not self.driven)
        heartbeat.start()
        local.callback(heartbeat.end)

    def supervise(self) -> int:
        """Wait for the script to end (or --timeout); return its exit code."""
        timeout = self.settings.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))):
            self._check_abort()
            if deadline is not None and time.monotonic() >= deadline:
                raise _Abort("timeout")
        return _exit_code(self._ready())

    def tear_down(self) -> None:
        """Every engine-side clean-up, then the engine's confirmation; after an engine loss, wait for it."""
        if not self.lost:
            try:
                self._unwind()
            except Exception as e:
                if not engine.went_away(self.client, e):
                    raise
                self.lost = True
        if self.lost:
            self.ending, self.code = Ending.ENGINE_LOST, int(ExitCode.TOOL)
            _await_engine(self.client, self._unwind, self.err, revoke_pending=lambda: self._to_revoke is not None)

    def confirm(self, duration: float) -> RunResult:
        """The run's result; a failed revocation turns success into a failure."""
        if self._pump is not None:
            self._pump.fresh_line()  # the closing line starts a line of its own, in plain colours
        if self.receiver is not None and self._key_read and not self.lab:  # qsandbox lab: says its own
            got = self.receiver.delivered
            self._say(
                f"/output: {len(got)} entr{'y' if len(got) == 1 else 'ies'} delivered to {self.settings.output}"
                if got is not None
                else "/output: nothing arrived from the sandbox"
            )
        if self.revocation is not None and not self.revocation.ok and self.code == 0:
            self.code = int(ExitCode.TOOL)  # the user asked for a dead key; say loudly it is not
        return RunResult(
            run_id=self.run_id,
            exit_code=self.code,
            duration=duration,
            leftovers=self.left,
            ending=self.ending or Ending.of_exit(self.code),
            revocation=self.revocation,
            egress_refused=self._closing.mask(shown(self.relay.summary())) if self.relay else "",
            egress_unreachable=self._closing.mask(shown(self.relay.unreachable())) if self.relay else "",
            started_at=self.started_at,
            image_id=self.image_id,
        )

    # -- the steps behind them ------------------------------------------------------------------

    def _ready(self) -> _Prepared:
        assert self.prepared is not None, "the sandbox is prepared before this phase"  # an invariant
        return self.prepared

    def _unwind(self) -> None:
        """Run the registered clean-up steps, then ask the engine what is left of this run."""
        self.cleanup.unwind()
        self.left = sandbox.leftovers(self.client, self.run_id)

    def _say(self, text: str) -> None:
        if self._pump is not None:
            self._pump.fresh_line()
        self.err.write(f"qsandbox: {text}\n".encode())
        self.err.flush()

    def _refuse_key_in_inputs(self, secret: Secret) -> None:
        """The key itself in a file the user sends would outlive nothing, but is a mistake: refuse."""
        found = self.inputs.find(secret.reveal())
        if found:
            raise UsageError(
                f"{shown(found)} holds the API key itself, so nothing was sent: remove the key from it (the "
                "script finds its account without it) or leave the file out"
            )

    def _prepare_sandbox(self, local: ExitStack) -> None:
        """Create, verify, attach and start. The entry point then imports Qiskit and waits for the key."""
        client = self.client
        # Registered before the sandbox, so it runs after the sandbox is gone and before the
        # emulator it may need is stopped; it does nothing unless the key was handed in.
        self.cleanup.push("revoke the key (--revoke-after)", self._revoke_if_armed)
        container = sandbox.create(client, self.settings, self.run_id)
        container_id = cast(str, container.id)  # typed optional by the SDK; a created container has one
        self.image_id = container.attrs.get("Image") if container.attrs else None
        self.cleanup.push("remove the sandbox", lambda: self._remove_sandbox(container_id))
        removal = sandbox.Removal(client, container_id)
        attachment = sandbox.attach(client, container_id)
        local.callback(attachment.close)  # EOF: the entry point ends the script and exits
        sandbox.start(container)
        self._started = True
        self.prepared = _Prepared(container_id, attachment, removal)

    def _remove_sandbox(self, container_id: str) -> None:
        if self._started:
            _ensure_gone(self.client, container_id)  # the daemon auto-removes it; confirm, force if not
        else:
            sandbox.destroy(self.client, container_id)

    def _revoke_if_armed(self) -> None:
        if self._to_revoke is None:
            return
        self.revocation = self._to_revoke.revoke(self._keys_before)
        self._to_revoke = None
        if self._pump is not None:
            self._pump.fresh_line()
        self.err.write(self.revocation.line().encode() + b"\n")
        self.err.flush()

    def _check_egress(self) -> None:
        """--platform ibm: the relay's rules and the CA are checked before anything starts."""
        s = self.settings
        if s.ca_file is not None:
            try:
                self.ca_pem = s.ca_file.read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise UsageError(f"--ca-file {s.ca_file}: cannot read it ({e})") from None
            if "-----BEGIN CERTIFICATE-----" not in self.ca_pem:
                raise UsageError(f"--ca-file {s.ca_file}: not a PEM certificate bundle")
            self.settings = s = replace(
                s, extra_env=(*s.extra_env, ("REQUESTS_CA_BUNDLE", str(CA_FILE)), ("SSL_CERT_FILE", str(CA_FILE)))
            )
        if self.local:
            return
        # The broker (short-lived tokens, --revoke-after) goes through the relay in either mode.
        self.egress = Egress(egress.allowlist(s.allow_hosts), dict(parse_connect_to(c) for c in s.connect_to))
        if s.egress == "open":
            self._say(
                "warning: --network open: the script, and every package it imports, can send the API key to "
                "any host on the internet while the run lasts"
            )
            return
        # No network at all: the entry point's CONNECT proxy, relayed by us, is the only way out.
        self.settings = replace(s, network="none", extra_env=(*s.extra_env, *Egress.environment()))

    def _read_key_while_preparing(self, local: ExitStack) -> Secret:
        """At the prompt, the sandbox is made ready while the user types (a bad key tears it down)."""
        error: list[BaseException] = []

        def work() -> None:
            try:
                self._prepare_sandbox(local)
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                error.append(e)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            secret = self.source.read(self.prompt)
            self._refuse_key_in_inputs(secret)  # the sandbox is torn down before any key is sent
        finally:
            worker.join()  # whatever it registered is torn down with the rest
        if error:
            raise error[0]
        return secret


def run(
    settings: RunSettings,
    source: KeySource,
    *,
    out: BinaryIO | None = None,
    err: BinaryIO | None = None,
    prompt: Callable[[], str] | None = None,
) -> RunResult:
    """Run settings.script in a fresh sandbox, handing it the key read from `source`."""
    return Run(settings, source, out=out or sys.stdout.buffer, err=err or sys.stderr.buffer, prompt=prompt).execute()


def _stop_emulator(client: docker.DockerClient, emulator: Future[localplatform.LocalPlatform]) -> None:
    try:
        platform = emulator.result()
    except Exception:  # noqa: BLE001 - it failed to start and removed itself; its error is the run's
        return
    localplatform.stop(client, platform)


def _await_engine(
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


def _exit_code(prepared: _Prepared) -> int:
    result: list[int | BaseException] = []

    def wait() -> None:
        try:
            result.append(prepared.removal.exit_code())
        except BaseException as e:  # noqa: BLE001
            result.append(e)

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    t.join(REMOVAL_WAIT)
    if not result:
        raise SandboxError("the engine did not report the sandbox's exit; it is being removed")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def _abort(prepared: _Prepared, reason: str, forced: threading.Event | None = None) -> None:
    """Ask the entry point to stop the script and cancel its jobs; force it if it takes too long.

    A second signal stops the wait; for a driven run (`forced` given) a second `Run.abort()` does.
    """
    with suppress(OSError):
        prepared.attachment.send(stream.control(handoff.encode_abort(reason)))
    if forced is not None:
        waiter = threading.Thread(target=prepared.removal.exit_code, daemon=True)
        waiter.start()
        end = time.monotonic() + ABORT_GRACE
        while waiter.is_alive() and not forced.is_set() and time.monotonic() < end:
            waiter.join(0.2)
        return
    try:
        with _Signals():
            t = threading.Thread(target=prepared.removal.exit_code, daemon=True)
            t.start()
            t.join(ABORT_GRACE)
    except _Abort:
        pass  # a second signal: stop waiting, force it below


def _ensure_gone(client: docker.DockerClient, container_id: str) -> None:
    """Confirm with the engine that the container is gone; remove it ourselves if it is not."""
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        try:
            client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return
        time.sleep(0.05)
    sandbox.destroy(client, container_id)
