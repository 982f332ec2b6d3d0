"""Everything that can refuse a run before anything starts, in the order a user needs it: the key
source, then what the user gave (the relay's rules, inputs, --output, the CA), then the engine
(preflight, image). A refusal here leaves nothing behind: nothing has been created yet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import BinaryIO

import docker
import docker.errors

from ...common.errors import ImageMissing, PreflightRefused, UsageError
from ...common.text import shown
from ..core.credentials import KeySource, Secret
from ..core.settings import IMAGE, Hardening, RunSettings
from ..engine import client as engine
from ..engine import deps, image, preflight
from . import transfer
from .plans import CA_ENV, Lab, Learned, Plan


@dataclass(frozen=True)
class EngineChecked:
    """The engine as a run finds it: a batch checks it once and hands this to each of its runs."""

    client: docker.DockerClient
    hardening: Hardening  # fitted to the engine (and read back per sandbox all the same)


def check_engine(settings: RunSettings, err: BinaryIO) -> EngineChecked:
    """Connect, preflight (warnings said once, or refused) and the image: what every run checks first."""
    client = engine.connect()
    hardening = fit(client, settings, err)
    check_image(client, settings.image)
    return EngineChecked(client, hardening)


def check_run(
    settings: RunSettings,
    source: KeySource,
    plan: Plan,
    learned: Learned,
    *,
    checked: EngineChecked | None,
    say: Callable[[str], None],
    err: BinaryIO,
    lab: Lab | None = None,
) -> docker.DockerClient:
    """What a run checks before anything starts; what it learns goes into `learned`. Returns the
    engine's client (a batch's, when `checked` is given: one client, fewer round trips)."""
    if not (plan.rehearsal and source.interactive):
        source.check()
    _read_ca(settings, learned)
    plan.rules(settings, learned, say)
    learned.inputs = (
        lab.collect(settings)  # qsandbox lab: DIR, whole
        if lab is not None
        else transfer.collect(
            settings.script, workdir=settings.workdir, includes=settings.includes, limit=settings.input_limit
        )
    )
    for note in learned.inputs.left_out:
        say(f"not sent into the sandbox: {shown(note)}")
    if settings.output is not None:
        transfer.check_output(settings.output, merge=settings.output_merge)
        learned.receiver = transfer.OutputReceiver(
            settings.output,
            settings.hardening.output_size,
            say,
            keep_modes=settings.output_keep_modes,
            source="the lab's /work" if lab is not None else "/output",
        )
    checked = checked or check_engine(settings, err)
    learned.hardening = replace(checked.hardening, work_size=learned.inputs.tmpfs_size)
    if settings.image != IMAGE:  # --image: a lab's own, built FROM ours
        image.check_lab_image(checked.client, settings.image)
    if settings.needs is not None:  # built (once) or reused here, before the key is read
        # By the id it verified (its use recorded by tag): a tag moved after the check changes nothing.
        learned.image = deps.ensure_image(checked.client, settings.image, settings.needs, say)
    else:
        deps.record_use(settings.image)  # for `qsandbox images` (last use) and --prune
    return checked.client


def refuse_key_in_inputs(inputs: transfer.Inputs | None, secret: Secret) -> None:
    """The key itself in a file the user sends would outlive nothing, but is a mistake: refuse."""
    found = inputs.find(secret.reveal()) if inputs is not None else None
    if found:
        raise UsageError(
            f"{shown(found)} holds the API key itself, so nothing was sent: remove the key from it (the "
            "script finds its account without it) or leave the file out"
        )


def _read_ca(settings: RunSettings, learned: Learned) -> None:
    """--ca-file: a PEM bundle the sandbox trusts (a campus proxy's), read now, sent with the key."""
    if settings.ca_file is None:
        return
    try:
        learned.ca_pem = settings.ca_file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--ca-file {settings.ca_file}: cannot read it ({e})") from None
    if "-----BEGIN CERTIFICATE-----" not in learned.ca_pem:
        raise UsageError(f"--ca-file {settings.ca_file}: not a PEM certificate bundle")
    learned.extra_env = (*learned.extra_env, *CA_ENV)


def fit(client: docker.DockerClient, settings: RunSettings, err: BinaryIO) -> Hardening:
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
    return hardening


def check_image(client: docker.DockerClient, name: str) -> None:
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
