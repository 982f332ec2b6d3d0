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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import BinaryIO

import docker
import docker.errors

from ..common import handoff
from ..common.errors import EngineUnavailable, ExitCode, ImageError, PreflightRefused, QsandboxError, SandboxError
from ..common.platform_constants import INSTANCE_CRN
from ..common.redact import Redactor
from . import engine, localplatform, preflight, sandbox
from .credentials import KeySource, Secret
from .revoke import Revocation, mint, revoke
from .settings import CA_FILE, RunSettings

ABORT_GRACE = 30.0  # entry point: interrupt the script (5 s), then cancel jobs (<= 20 s)
REMOVAL_WAIT = 10.0
ENGINE_RETURN_WAIT = 60.0  # after losing the engine mid-run: how long to wait for it to confirm removal
SIGNAL_REASONS = {signal.SIGINT: "interrupt", signal.SIGTERM: "terminate", signal.SIGHUP: "hangup"}
REASON_EXIT = {
    "interrupt": ExitCode.SIGINT,
    "terminate": ExitCode.SIGTERM,
    "hangup": ExitCode.SIGHUP,
    "timeout": ExitCode.TIMEOUT,
}


@dataclass
class RunResult:
    run_id: str
    exit_code: int
    duration: float
    leftovers: list[str] = field(default_factory=list)
    aborted: str | None = None

    def summary(self) -> str:
        state = (
            "container and secret destroyed (engine confirms)"
            if not self.leftovers
            else "LEFT BEHIND: " + ", ".join(self.leftovers) + " (run `qsandbox sweep`)"
        )
        why = f" ({self.aborted})" if self.aborted else ""
        return f"qsandbox: run {self.run_id} exit {self.exit_code}{why} in {self.duration:.2f}s; {state}"


class _Abort(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Prepared:
    container_id: str
    attachment: sandbox.Attachment
    removal: sandbox.Removal


def _prepare(client: docker.DockerClient, settings: RunSettings, run_id: str) -> _Prepared:
    """Create, verify, attach and start. The entry point then imports Qiskit and waits for the key."""
    container = sandbox.create(client, settings, run_id)
    try:
        removal = sandbox.Removal(client, container.id)
        attachment = sandbox.attach(client, container.id)
        sandbox.start(container)
    except BaseException:
        sandbox.destroy(client, container.id)
        raise
    return _Prepared(container.id, attachment, removal)


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
        warnings.append(f"{info.kind} on cgroup v1: no memory, pids or CPU limits (--allow-no-limits)")
    for w in warnings:
        err.write(f"qsandbox: warning: {w}\n".encode())
        err.flush()
    return replace(settings, hardening=hardening)


class _Refresher(threading.Thread):
    """Short-lived mode: mint a fresh access token before the current one expires, and send it in."""

    def __init__(
        self,
        client: docker.DockerClient,
        settings: RunSettings,
        secret: Secret,
        ca_pem: str | None,
        prepared: _Prepared,
        expiration: int,
    ) -> None:
        super().__init__(daemon=True)
        self.client, self.settings, self.secret, self.ca_pem = client, settings, secret, ca_pem
        self.prepared, self.expiration = prepared, expiration
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(max(5.0, (self.expiration - time.time()) * 0.8)):
            try:
                minted = mint(
                    self.client, self.settings.image, self.secret, network=self.settings.network, ca_pem=self.ca_pem
                )
                self.expiration = int(minted["expiration"])  # type: ignore[call-overload]
                self.prepared.attachment.send(
                    handoff.encode_access_token(handoff.AccessToken(str(minted["access_token"]), self.expiration))
                )
            except (QsandboxError, OSError):
                continue  # try again; the current token is still valid for a while


class _Heartbeat(threading.Thread):
    """Tell the entry point every few seconds that the launcher, and the engine between us, live.

    EOF ends the sandbox when the launcher dies; silence ends it when the engine dies (no EOF then).
    """

    def __init__(self, attachment: sandbox.Attachment, err: BinaryIO) -> None:
        super().__init__(daemon=True)
        self.attachment, self.err = attachment, err
        self.stop = threading.Event()
        # Called in the main thread: Ctrl-Z stops the heartbeat too, so say what that means.
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
        signal.signal(signal.SIGTSTP, self._old_tstp)

    def run(self) -> None:
        while not self.stop.wait(handoff.HEARTBEAT_INTERVAL):
            try:
                self.attachment.send(handoff.ALIVE)
            except OSError:
                return


def _check_image(client: docker.DockerClient, image: str) -> None:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ImageError(
            f"image {image} is not on this engine: run `qsandbox build` (this qsandbox version needs its own image)"
        ) from None


def _pump(
    attachment: sandbox.Attachment, out: BinaryIO, err: BinaryIO, done: threading.Event, secrets: list[str] | None
) -> None:
    """Copy the container's output to ours, live and redacted, until the stream ends."""
    targets = {1: out, 2: err}
    redactors = {n: Redactor(secrets) for n in targets} if secrets is not None else None

    def write(stream: int, data: bytes) -> None:
        try:
            targets[stream].write(data)
            targets[stream].flush()
        except (OSError, ValueError):  # our terminal is gone (SIGHUP): keep draining
            pass

    try:
        for stream, data in attachment.frames():
            stream = 2 if stream == 2 else 1
            write(stream, redactors[stream].feed(data) if redactors else data)
    except OSError:
        pass
    finally:
        if redactors:
            for stream, r in redactors.items():
                write(stream, r.flush())
        done.set()


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


def _read_key_while_preparing(
    client: docker.DockerClient,
    settings: RunSettings,
    run_id: str,
    source: KeySource,
    prompt: Callable[[], str] | None,
) -> tuple[Secret, _Prepared]:
    """At the prompt, the sandbox is made ready while the user types (it is destroyed on a bad key)."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["prepared"] = _prepare(client, settings, run_id)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            box["error"] = e

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        secret = source.read(prompt)
    except BaseException:
        worker.join()
        if "prepared" in box:
            _abandon(client, box["prepared"])  # type: ignore[arg-type]
        raise
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return secret, box["prepared"]  # type: ignore[return-value]


def _abandon(client: docker.DockerClient, prepared: _Prepared) -> None:
    prepared.attachment.close()  # EOF: the entry point exits before any key arrived
    sandbox.destroy(client, prepared.container_id)


def _own_output_dir(settings: RunSettings, back: bool) -> None:
    """As root, lend --output to the sandbox uid for the run and take it back afterwards."""
    out = settings.output
    if out is None or os.getuid() != 0:
        return
    uid = 0 if back else settings.hardening.uid
    paths = [out, *out.rglob("*")] if back else [out]
    for p in paths:
        try:
            os.lchown(p, uid, uid)
        except OSError:
            pass


def run(
    settings: RunSettings,
    source: KeySource,
    *,
    out: BinaryIO | None = None,
    err: BinaryIO | None = None,
    prompt: Callable[[], str] | None = None,
) -> RunResult:
    """Run settings.script in a fresh sandbox, handing it the key read from `source`."""
    out = out or sys.stdout.buffer
    err = err or sys.stderr.buffer
    local = settings.platform in ("local", "shared")
    settings = replace(settings, prewarm=local or source.interactive)
    if not (local and source.interactive):
        source.check()
    client = engine.connect()
    settings = _preflight(client, settings, err)
    _check_image(client, settings.image)
    run_id = sandbox.new_run_id()
    began = time.monotonic()
    if settings.output is not None:
        settings.output.mkdir(parents=True, exist_ok=True)
        _own_output_dir(settings, back=False)

    prepared: _Prepared | None = None
    platform: localplatform.LocalPlatform | None = None
    network: str | None = None
    aborted: str | None = None
    code = int(ExitCode.TOOL)
    ca_pem: str | None = None
    to_revoke: Secret | None = None
    refresher: _Refresher | None = None
    heartbeat: _Heartbeat | None = None
    revocation: Revocation | None = None
    lost = False  # the engine stopped answering mid-run (restarted, crashed)
    left: list[str] = []  # what the engine still has of this run, after teardown

    def teardown() -> None:
        """Every engine-side clean-up, then the engine's confirmation; safe to repeat after an engine restart."""
        nonlocal to_revoke, revocation, platform, network, left
        if prepared is not None:
            _ensure_gone(client, prepared)
        if to_revoke is not None:  # after the sandbox, before the emulator it may need
            revocation = revoke(client, settings.image, to_revoke, network=settings.network, ca_pem=ca_pem)
            to_revoke = None
            err.write(revocation.line().encode() + b"\n")
            err.flush()
        if platform is not None:
            localplatform.stop(client, platform)
            platform = None
        if network is not None:
            localplatform.remove_network(client, network)
            network = None
        left = sandbox.leftovers(client, run_id)

    try:
        with _Signals():
            try:
                if local:
                    # A rehearsal needs no real key: without a source, a throwaway one is made.
                    secret = localplatform.throwaway_key() if source.interactive else source.read()
                    if settings.platform == "shared":
                        platform = localplatform.shared(client)
                        settings = _on_platform(settings, platform.network, platform.instance)
                        prepared = _prepare(client, settings, run_id)
                    else:
                        localplatform.remove_stale_networks(client)
                        network = localplatform.create_network(client, run_id)
                        settings = _on_platform(settings, network, INSTANCE_CRN)
                        # The emulator starts while the sandbox is made and imports Qiskit.
                        with ThreadPoolExecutor(1) as pool:
                            emulator = pool.submit(
                                localplatform.start_emulator,
                                client,
                                settings.image,
                                run_id,
                                network,
                                [localplatform.digest(secret)],
                            )
                            try:
                                prepared = _prepare(client, settings, run_id)
                            finally:
                                platform = emulator.result()
                    ca_pem = platform.ca_pem
                elif source.interactive:
                    secret, prepared = _read_key_while_preparing(client, settings, run_id, source, prompt)
                else:
                    secret = source.read()  # bad input fails here, before anything starts
                    prepared = _prepare(client, settings, run_id)
                short_lived = settings.token_mode == "short-lived"  # noqa: S105 - a mode name
                minted = (
                    mint(client, settings.image, secret, network=settings.network, ca_pem=ca_pem)
                    if short_lived
                    else None
                )
                message = handoff.encode_start(
                    handoff.Start(
                        # short-lived: a meaningless placeholder; the sandbox never sees the key
                        token=localplatform.throwaway_key().reveal() if short_lived else secret.reveal(),
                        channel=settings.channel,
                        instance=settings.instance,
                        ca_pem=ca_pem,
                    )
                )
                if minted is not None:
                    message += handoff.encode_access_token(
                        handoff.AccessToken(str(minted["access_token"]), int(minted["expiration"]))
                    )
                    refresher = _Refresher(client, settings, secret, ca_pem, prepared, int(minted["expiration"]))
                done = threading.Event()
                threading.Thread(
                    target=_pump,
                    args=(prepared.attachment, out, err, done, [secret.reveal()] if settings.redact else None),
                    daemon=True,
                ).start()
                if settings.revoke_after:
                    to_revoke = secret
                if refresher is not None:
                    refresher.start()
                del secret
                prepared.attachment.send(message)
                del message
                heartbeat = _Heartbeat(prepared.attachment, err)
                heartbeat.start()
                deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
                while not done.wait(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))):
                    if deadline is not None and time.monotonic() >= deadline:
                        raise _Abort("timeout")
                code = _exit_code(prepared)
            except _Abort as a:
                aborted = a.reason
                code = int(REASON_EXIT[a.reason])
                if prepared is not None:
                    _abort(client, prepared, a.reason)
            except Exception as e:
                if not engine.went_away(client, e):
                    raise
                lost = True
    finally:
        if refresher is not None:
            refresher.stop.set()
        if heartbeat is not None:
            heartbeat.end()
        if prepared is not None:
            prepared.attachment.close()
        try:
            if not lost:
                try:
                    teardown()
                except Exception as e:
                    if not engine.went_away(client, e):
                        raise
                    lost = True
            if lost:
                aborted, code = "the engine went away mid-run", int(ExitCode.TOOL)
                _await_engine(client, teardown, err, revoke_pending=lambda: to_revoke is not None)
        finally:
            _own_output_dir(settings, back=True)
    if revocation is not None and not revocation.ok and code == 0:
        code = int(ExitCode.TOOL)  # the user asked for a dead key; say loudly it is not
    return RunResult(
        run_id=run_id,
        exit_code=code,
        duration=time.monotonic() - began,
        leftovers=left,
        aborted=aborted,
    )


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


def _abort(client: docker.DockerClient, prepared: _Prepared, reason: str) -> None:
    """Ask the entry point to stop the script and cancel its jobs; force it if it takes too long."""
    try:
        prepared.attachment.send(handoff.encode_abort(reason))
    except OSError:
        pass
    try:
        with _Signals():
            t = threading.Thread(target=prepared.removal.exit_code, daemon=True)
            t.start()
            t.join(ABORT_GRACE)
    except _Abort:
        pass  # a second signal: stop waiting, force it below


def _ensure_gone(client: docker.DockerClient, prepared: _Prepared) -> None:
    """Confirm with the engine that the container is gone; remove it ourselves if it is not."""
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        try:
            client.api.inspect_container(prepared.container_id)
        except docker.errors.NotFound:
            return
        time.sleep(0.05)
    sandbox.destroy(client, prepared.container_id)
