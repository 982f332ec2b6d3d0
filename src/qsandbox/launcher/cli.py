"""The command line. Each command turns options into settings and calls one core function."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import __version__
from ..common.errors import ExitCode, QsandboxError, UsageError
from ..common.text import shown

if TYPE_CHECKING:
    from .report import Report

KEY_ORDER = """\b
The API key is never a command-line value. Sources, in order:
  --token-stdin         first line of standard input
  --token-file PATH     a file (a CI secret file, or /dev/fd/N)
  --token-env NAME      an environment variable (removed before anything starts)
  --token-command CMD   a credential helper's standard output
  (none, on a terminal) a hidden prompt
"""


def key_source_options(f: Callable[..., None]) -> Callable[..., None]:
    """The four key-source options, in their documented order (see KEY_ORDER)."""
    for option in reversed(
        [
            click.option("--token-stdin", is_flag=True, help="Read the key from the first line of stdin."),
            click.option("--token-file", metavar="PATH", help="Read the key from a file."),
            click.option("--token-env", metavar="NAME", help="Read the key from this environment variable."),
            click.option("--token-command", metavar="CMD", help="Run a credential helper that prints the key."),
        ]
    ):
        f = option(f)
    return f


def egress_options(f: Callable[..., None]) -> Callable[..., None]:
    """Where the sandbox may connect on the real platform (launcher/egress.py)."""
    for option in reversed(
        [
            click.option(
                "--network",
                "egress",
                type=click.Choice(["allowlist", "open"]),
                default="allowlist",
                show_default=True,
                help="--platform ibm: allowlist gives the sandbox no network at all; the launcher relays its "
                "HTTPS to IBM Cloud's hosts (IAM, Global Search, Global Catalog, the Runtime API) and --allow-host "
                "only, from this machine. open gives it the engine's ordinary network, where the script can send "
                "the key anywhere.",
            ),
            click.option(
                "--allow-host",
                "allow_hosts",
                multiple=True,
                metavar="HOST",
                help="Also allow HTTPS (443) to HOST through the relay (repeatable).",
            ),
            click.option(
                "--connect-to",
                "connect_to",
                multiple=True,
                metavar="HOST:443:ADDR:PORT",
                help="Connect to ADDR:PORT when the sandbox asks for HOST:443 (as curl's --connect-to): a private "
                "endpoint, or a stand-in platform. HOST must still be allowed. Repeatable.",
            ),
            click.option(
                "--ca-file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=None,
                help="A PEM CA bundle the sandbox trusts instead of the image's (a TLS-inspecting "
                "corporate proxy, a stand-in platform).",
            ),
        ]
    ):
        f = option(f)
    return f


def report_options(f: Callable[..., None]) -> Callable[..., None]:
    """--json and --junit: machine-readable reports of a run or a batch (launcher/report.py)."""
    f = click.option(
        "--junit",
        "junit_report",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE",
        help="Write a JUnit XML report (one testcase per script; redacted output as system-out).",
    )(f)
    return click.option(
        "--json",
        "json_report",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE",
        help="Write a JSON report (schema: qsandbox/launcher/report.schema.json, version 1).",
    )(f)


def _write_reports(report: Report, json_report: Path | None, junit_report: Path | None) -> None:
    if json_report is not None:
        report.write_json(json_report)
    if junit_report is not None:
        report.write_junit(junit_report)


def _fail(e: QsandboxError, debug: bool) -> None:
    if debug:
        raise e
    # One line, whatever it names: a file name, a host or a message from the sandbox can hold escapes.
    click.echo(f"qsandbox: {shown(str(e))}", err=True)
    sys.exit(int(e.exit_code))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qsandbox")
@click.option("--debug", is_flag=True, help="Show tracebacks for qsandbox's own errors.")
@click.option(
    "--ssh-client",
    is_flag=True,
    envvar="QSANDBOX_SSH_CLIENT",
    help="Reach an ssh:// engine (DOCKER_HOST=ssh://user@host) with the ssh command, honouring "
    "~/.ssh/config and the agent, instead of the built-in paramiko [env: QSANDBOX_SSH_CLIENT=1].",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, ssh_client: bool) -> None:
    """Run Qiskit scripts on machines you do not trust.

    The IBM Quantum API key goes into a throwaway, hardened container through a tmpfs (RAM only),
    the script runs against QiskitRuntimeService unchanged, and container and key are destroyed
    when it ends, however it ends.

    \b
    The engine is found as the docker CLI finds it: DOCKER_HOST, else the docker context, else
    /var/run/docker.sock. Remote engines: DOCKER_HOST=ssh://user@host (see --ssh-client), or
    DOCKER_HOST=tcp://host:2376 with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH.
    """
    if ssh_client:
        import os

        os.environ["QSANDBOX_SSH_CLIENT"] = "1"  # engine.connect() reads it, in this process and its helpers
    ctx.obj = {"debug": debug}


@main.command()
@click.option(
    "--base-image",
    default=None,
    metavar="NAME",
    help="Base image with python3 and venv [default: python:3.12-slim; with --offline-base: qsandbox-base:bookworm].",
)
@click.option(
    "--offline-base",
    is_flag=True,
    help="No registry: build on a base made from the OS packages (debootstrap, then import; needs root "
    "once, reused after).",
)
@click.pass_context
def build(ctx: click.Context, base_image: str | None, offline_base: bool) -> None:
    """Build the sandbox image qsandbox:VERSION with the pinned Qiskit stack, from this installation."""
    from . import engine, image, offlinebase
    from .settings import IMAGE

    def say(line: str) -> None:
        click.echo(line, err=True)

    try:
        client = engine.connect(timeout=1800)
        if offline_base:
            base = offlinebase.ensure(client, base_image or offlinebase.OFFLINE_BASE, say=say)
        else:
            base = base_image or image.DEFAULT_BASE
        image_id = image.build(client, base=base, say=say)
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    click.echo(f"qsandbox: built {IMAGE} ({image_id[7:19]})", err=True)


@main.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check the engine, the image, and the hardening from inside a probe container."""
    from .doctor import checks

    ok = checks(lambda c: click.echo(c.line()))
    if not ok:
        sys.exit(int(ExitCode.FAILURE))


@main.command(context_settings={"ignore_unknown_options": True}, epilog=KEY_ORDER)
@click.argument("script", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@key_source_options
@click.option(
    "--instance", envvar="QISKIT_IBM_INSTANCE", default=None, help="Instance CRN or name [env: QISKIT_IBM_INSTANCE]."
)
@click.option(
    "--channel",
    envvar="QISKIT_IBM_CHANNEL",
    default="ibm_quantum_platform",
    show_default=True,
    help="ibm_quantum_platform or ibm_cloud [env: QISKIT_IBM_CHANNEL].",
)
@click.option(
    "--include",
    "includes",
    multiple=True,
    type=click.Path(path_type=Path),  # relative to the script's directory: checked there, not here
    metavar="PATH",
    help="Also send this file or directory in (repeatable), at its path relative to the script's "
    "directory. Only the script is sent otherwise.",
)
@click.option(
    "--workdir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Send this project directory (which holds the script) whole, as /work. Credential stores in "
    "it (.ssh, .gnupg, .qiskit, .aws, .docker, .netrc, .git-credentials, .env) are left out.",
)
@click.option("--input-limit", default="100m", show_default=True, help="Most the inputs may come to.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory that receives what the script wrote to /output, when it ends (also after an error, "
    "a timeout or Ctrl-C).",
)
@click.option("--output-limit", default="256m", show_default=True, help="Size of the /output tmpfs.")
@click.option(
    "--output-merge",
    is_flag=True,
    help="Let --output DIR hold files already; a file that exists is never overwritten (it is refused and named).",
)
@click.option(
    "--output-keep-modes",
    is_flag=True,
    help="Delivered files keep their exec bits (by default none comes back: nothing delivered is runnable).",
)
@click.option(
    "--raw-output",
    is_flag=True,
    help="Pass the script's control sequences through: by default only newline, tab and colours reach a "
    "terminal (and a batch's labelled blocks, wherever they go), so a script cannot move the cursor, rewrite "
    "qsandbox's lines, set the title or the clipboard.",
)
@click.option(
    "--requirements",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="The script's own dependencies (one requirement a line), for a script without PEP 723 "
    "`# /// script` metadata: installed once into an image derived from the sandbox's, then reused.",
)
@click.option(
    "--image",
    "image_name",
    default=None,
    metavar="NAME",
    help="A lab's own image, built FROM this version's qsandbox image (checked by its qsandbox.version "
    "label and entry point) [default: qsandbox:VERSION].",
)
@click.option("--timeout", type=float, default=None, metavar="SECONDS", help="End the run after this long (exit 124).")
@click.option("--memory", default="2g", show_default=True, help="Memory limit (no swap).")
@click.option("--pids", type=int, default=512, show_default=True, help="Process/thread limit.")
@click.option(
    "--platform",
    type=click.Choice(["ibm", "local", "shared"]),
    default="ibm",
    show_default=True,
    help="ibm: the real IBM Quantum Platform. local: an emulated one on an internal network, "
    "for this run only. shared: the emulator from `qsandbox platform up`. With local "
    "or shared and no key source, a throwaway key is made.",
)
@click.option(
    "--queue-time",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="--platform local: keep each job QUEUED, then RUNNING, for about this long, as a real queue "
    "does, to rehearse waiting, timeouts and cancelling [default: 0].",
)
@click.option(
    "--token-mode",
    type=click.Choice(["api-key", "short-lived"]),
    default="api-key",
    show_default=True,
    help="short-lived: exchange the key for an IAM access token outside the sandbox; only that "
    "token (valid for at most an hour, refreshed while the run lasts) enters it.",
)
@click.option(
    "--revoke-after",
    is_flag=True,
    help="When the run ends, however it ends (short of SIGKILL), delete the API key through "
    "IBM Cloud IAM, as IBM advises after using a key on an untrusted machine.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse to run when a preflight check warns (host swap, engine debug mode, an engine other users can reach).",
)
@click.option(
    "--allow-no-limits",
    is_flag=True,
    help="Accept an engine that cannot apply memory, pids and CPU limits (rootless Docker or "
    "Podman on cgroup v1). Refused while host swap is on. Has no effect where limits work.",
)
@click.option(
    "--no-redact", is_flag=True, help="Debugging only: do not mask the key and IAM tokens in the script's output."
)
@click.option(
    "--no-cancel-on-abort", is_flag=True, help="On Ctrl-C/SIGTERM/timeout, leave the script's Runtime jobs running."
)
@egress_options
@report_options
@click.pass_context
def run(
    ctx: click.Context,
    script: Path,
    args: tuple[str, ...],
    token_stdin: bool,
    token_file: str | None,
    token_env: str | None,
    token_command: str | None,
    instance: str | None,
    channel: str,
    includes: tuple[Path, ...],
    workdir: Path | None,
    input_limit: str,
    output: Path | None,
    output_limit: str,
    output_merge: bool,
    output_keep_modes: bool,
    raw_output: bool,
    timeout: float | None,
    memory: str,
    pids: int,
    platform: str,
    token_mode: str,
    revoke_after: bool,
    strict: bool,
    allow_no_limits: bool,
    no_redact: bool,
    no_cancel_on_abort: bool,
    requirements: Path | None,
    image_name: str | None,
    json_report: Path | None,
    junit_report: Path | None,
    egress: str,
    allow_hosts: tuple[str, ...],
    connect_to: tuple[str, ...],
    ca_file: Path | None,
    queue_time: float | None,
) -> None:
    """Run SCRIPT [ARGS]... in a fresh sandbox with the API key in RAM only.

    Only the script is sent in, to /work, unless --include or --workdir name more (nothing of
    this machine is mounted); what it writes to /output comes back to --output DIR. It finds its account the way
    QiskitRuntimeService() always does (~/.qiskit, here a tmpfs), and REST scripts read the key
    from the file named by $QISKIT_IBM_TOKEN_FILE. Its exit code is passed through; bad input and
    refusals before anything starts exit 2 (the message names the remedy), qsandbox's or the
    engine's own failures 125, --timeout 124, Ctrl-C 130, SIGTERM 143, SIGHUP 129.
    """
    from . import report
    from .credentials import KeySource, harden_process
    from .deps import for_script
    from .run import run as run_script
    from .settings import IMAGE, Hardening, RunSettings, parse_size

    harden_process()
    try:
        if script.suffix == ".ipynb" and args:
            raise UsageError(
                f"a notebook takes no arguments (got {' '.join(args)}): pass values in a file with --include"
            )
        source = KeySource(stdin=token_stdin, file=token_file, env=token_env, command=token_command)
        if not (platform != "ibm" and source.interactive):
            source.check()
        settings = RunSettings(
            platform=platform,
            script=script.resolve(),
            args=args,
            channel=channel,
            instance=instance,
            output=output.resolve() if output else None,
            output_merge=output_merge,
            output_keep_modes=output_keep_modes,
            raw_output=raw_output,
            workdir=workdir,
            includes=includes,
            input_limit=parse_size(input_limit),
            timeout=timeout,
            hardening=Hardening(memory=parse_size(memory), pids=pids, output_size=parse_size(output_limit)),
            cancel_on_abort=not no_cancel_on_abort,
            redact=not no_redact,
            strict=strict,
            allow_no_limits=allow_no_limits,
            revoke_after=revoke_after,
            token_mode=token_mode,
            egress=egress,
            allow_hosts=allow_hosts,
            connect_to=connect_to,
            ca_file=ca_file,
            queue_time=queue_time,
            image=image_name or IMAGE,
            needs=for_script(script, requirements) if script.is_file() else None,
        )
        if no_redact:
            click.echo(
                "qsandbox: WARNING: --no-redact: whatever the script prints, the API key included, "
                "reaches this terminal, its scrollback and any log of it",
                err=True,
            )
        report.check_writable(json_report, junit_report)
        result = run_script(settings, source)
    except QsandboxError as e:
        if json_report or junit_report:  # CI reads the report whatever happened
            failed = report.Report(
                command="run",
                exit_code=int(e.exit_code),
                duration=0.0,
                ended="error",
                entries=[report.Entry(script=str(script), exit_code=int(e.exit_code), ended="error", error=str(e))],
            )
            try:
                _write_reports(failed, json_report, junit_report)
            except QsandboxError:
                pass  # the run's own error is the one to report
        _fail(e, ctx.obj["debug"])
    click.echo(result.summary(), err=True)
    code = result.exit_code if not result.leftovers else int(ExitCode.TOOL)
    try:
        _write_reports(
            report.Report(
                command="run",
                exit_code=code,
                duration=result.duration,
                ended=report.ended(result),
                entries=[report.entry(str(script), result)],
                revocation=result.revocation,
            ),
            json_report,
            junit_report,
        )
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    sys.exit(result.exit_code if not result.leftovers else int(ExitCode.TOOL))


BATCH_HELP = """\b
Exit codes: 0 every script passed (exit 0, nothing left behind); 1 one or more
failed or were not run (--fail-fast); 2 nothing started (bad input, a refusal);
125 qsandbox or the engine left something behind or --revoke-after failed;
130/143/129 the batch was ended by Ctrl-C/SIGTERM/SIGHUP (every sandbox torn down).
"""
# batch takes these of run's options unchanged (same names, help and defaults).
_FROM_RUN = (
    "token_stdin token_file token_env token_command instance channel includes input_limit output_limit memory "
    "pids platform token_mode strict allow_no_limits no_redact no_cancel_on_abort output_merge output_keep_modes "
    "raw_output"
).split()


@main.command(epilog=BATCH_HELP + "\n" + KEY_ORDER)
@click.argument("scripts", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=4, show_default=True, help="Scripts at a time.")
@click.option(
    "--ahead",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Sandboxes made ready (started, no key yet) ahead of their turn [default: --jobs].",
)
@click.option("--fail-fast", is_flag=True, help="After the first script that fails, start no more.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory that receives, in DIR/<script stem>/, what each script wrote to /output.",
)
@click.option("--timeout", type=float, default=None, metavar="SECONDS", help="End a script after this long (124).")
@click.option(
    "--revoke-after", is_flag=True, help="After the last script (however the batch ends), delete the API key via IAM."
)
@egress_options
@report_options
@click.pass_context
def batch(
    ctx: click.Context,
    /,
    scripts: tuple[Path, ...],
    jobs: int,
    ahead: int | None,
    fail_fast: bool,
    output: Path | None,
    timeout: float | None,
    revoke_after: bool,
    json_report: Path | None,
    junit_report: Path | None,
    **shared: Any,
) -> None:
    """Run each SCRIPT in its own fresh sandbox, --jobs at a time, under one key read once.

    Each script's output is printed whole when it ends; a summary table follows. --include paths
    are relative to each script's directory. With --platform local one emulator serves the batch.
    Ctrl-C, SIGTERM and SIGHUP end every live sandbox and start no more.
    """
    from . import report
    from .batch import Batch
    from .credentials import KeySource, harden_process
    from .settings import Hardening, RunSettings, parse_size

    harden_process()
    o = shared
    try:
        source = KeySource(stdin=o["token_stdin"], file=o["token_file"], env=o["token_env"], command=o["token_command"])
        if not (o["platform"] != "ibm" and source.interactive):
            source.check()
        report.check_writable(json_report, junit_report)
        stems = [s.stem for s in scripts]
        if output is not None and len(set(stems)) < len(stems):
            twice = sorted({s for s in stems if stems.count(s) > 1})
            raise UsageError(f"--output: two scripts are named {twice[0]}, so their DIR/<stem> would clash: rename one")
        hardening = Hardening(memory=parse_size(o["memory"]), pids=o["pids"], output_size=parse_size(o["output_limit"]))
        runs = [
            (
                str(script),
                RunSettings(
                    platform=o["platform"],
                    script=script.resolve(),
                    channel=o["channel"],
                    instance=o["instance"],
                    output=(output / script.stem).resolve() if output else None,
                    output_merge=o["output_merge"],
                    output_keep_modes=o["output_keep_modes"],
                    raw_output=o["raw_output"],
                    includes=o["includes"],
                    input_limit=parse_size(o["input_limit"]),
                    timeout=timeout,
                    hardening=hardening,
                    cancel_on_abort=not o["no_cancel_on_abort"],
                    redact=not o["no_redact"],
                    strict=o["strict"],
                    allow_no_limits=o["allow_no_limits"],
                    token_mode=o["token_mode"],
                    egress=o["egress"],
                    allow_hosts=o["allow_hosts"],
                    connect_to=o["connect_to"],
                    ca_file=o["ca_file"],
                ),
            )
            for script in scripts
        ]
        if o["no_redact"]:
            click.echo(
                "qsandbox: WARNING: --no-redact: whatever the scripts print, the API key included, is shown", err=True
            )
        runner = Batch(
            runs,
            source,
            jobs=jobs,
            ahead=ahead,
            fail_fast=fail_fast,
            revoke_after=revoke_after,
            out=sys.stdout.buffer,
            err=sys.stderr.buffer,
        )
        result = runner.execute()
        click.echo(result.table(), err=True)
        _write_reports(
            result.report([runner.secret.reveal()] if runner.secret and not o["no_redact"] else []),
            json_report,
            junit_report,
        )
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    sys.exit(result.exit_code)


# Added after click's decorators have run, before the report options: the options shared with
# `run`, in their order there, so their help and defaults cannot drift apart.
_at = next(i for i, p in enumerate(batch.params) if p.name == "json_report")
batch.params[_at:_at] = [p for p in run.params if p.name in _FROM_RUN]


@main.command()
@click.option("--prune", is_flag=True, help="Remove derived images (a script's own dependencies) instead of listing.")
@click.option(
    "--days",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="With --prune: those not used for this many days.",
)
@click.option("--all", "prune_all", is_flag=True, help="With --prune: every derived image.")
@click.pass_context
def images(ctx: click.Context, prune: bool, days: float, prune_all: bool) -> None:
    """List the sandbox images and those derived for scripts' own dependencies: size and last use.

    Last use is recorded by qsandbox in ~/.cache/qsandbox/last-used.json (an image's labels cannot
    change); an image never used from this account counts from its creation.
    """
    import time

    from . import deps, engine

    try:
        client = engine.connect()
        if prune:
            removed = deps.prune(client, days=None if prune_all else days, say=click.echo)
            click.echo(f"qsandbox: pruned {removed} derived image(s)", err=True)
            return
        rows = deps.listing(client)
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    click.echo(f"{'IMAGE':<42} {'KIND':<8} {'SIZE':>8}  {'CREATED':<19}  {'LAST USED':<16}  REQUIREMENTS")
    for r in rows:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.last_used)) if r.last_used else "-"
        click.echo(f"{r.tag:<42} {r.kind:<8} {r.size / 1e6:>5.0f} MB  {r.created:<19}  {used:<16}  {r.requirements}")


@main.command()
@click.pass_context
def sweep(ctx: click.Context) -> None:
    """Remove every container and network qsandbox left behind (after an engine crash, say)."""
    from . import engine, sandbox

    try:
        removed = sandbox.sweep(engine.connect())
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    for line in removed:
        click.echo(f"removed {line}")
    click.echo(f"qsandbox: swept {len(removed)} object(s)", err=True)


@main.group()
def platform() -> None:
    """A long-lived emulated IBM Quantum Platform, for pipelines with many runs.

    \b
    qsandbox platform up
    qsandbox run --platform shared script.py     # any number of times
    qsandbox platform down
    """


@platform.command("up")
@click.option(
    "--token-ttl",
    type=click.IntRange(min=60),
    default=None,
    metavar="SECONDS",
    help="Lifetime of the IAM access tokens it issues [default: 3600], e.g. to rehearse refresh.",
)
@click.option(
    "--queue-time",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Keep each job QUEUED, then RUNNING, for about this long, as a real queue does [default: 0].",
)
@click.pass_context
def platform_up(ctx: click.Context, token_ttl: int | None, queue_time: float | None) -> None:
    """Start the shared emulator (accepts any well-formed key) on its internal network."""
    from . import engine, image, localplatform
    from .settings import IMAGE

    try:
        client = engine.connect()
        image.check(client)
        p = localplatform.up(client, IMAGE, token_ttl=token_ttl, queue_time=queue_time)
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    click.echo(f"qsandbox: shared platform up on network {p.network}; instance {p.instance}", err=True)


@platform.command("down")
@click.pass_context
def platform_down(ctx: click.Context) -> None:
    """Stop the shared emulator and remove its network."""
    from . import engine, localplatform

    try:
        found = localplatform.down(engine.connect())
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    click.echo("qsandbox: shared platform down" if found else "qsandbox: no shared platform was running", err=True)


@main.command()
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Choice(["success", "error", "timeout", "sigint", "sigterm", "sighup", "sigkill", "engine-restart"]),
    help="Exit path to audit (repeatable) [default: all; engine-restart only with --engine-restart].",
)
@click.option(
    "--engine-restart",
    "restart_engine",
    metavar="COMMAND",
    help="Shell command that restarts the engine (e.g. 'systemctl restart docker'), run mid-run "
    "for the engine-restart path. It disturbs every container on the engine.",
)
@click.option("--allow-no-limits", is_flag=True, help="Passed to every run (see `qsandbox run --help`).")
@click.option(
    "--allow-unsearched",
    "allow_unsearched",
    multiple=True,
    metavar="PLACE",
    help="Accept that PLACE cannot be searched here (repeatable; e.g. data-root for an ordinary user "
    "of a rootful engine). The places' names are listed in the audit's output.",
)
@click.pass_context
def audit(
    ctx: click.Context,
    paths: tuple[str, ...],
    restart_engine: str | None,
    allow_no_limits: bool,
    allow_unsearched: tuple[str, ...],
) -> None:
    """Send a canary key through real runs and search every place a key could leak.

    Prints each place: searched (with its hits), skipped (absent here, with the reason) or NOT
    SEARCHED. Exits 1 on any hit, or when a path was not taken as asked (wrong exit code, or the
    script never saw the key): its search proves nothing; exits 125 with NOT A PASS when a place
    could not be searched, unless accepted with --allow-unsearched.
    """
    from . import engine
    from .audit import ENGINE_RESTART, EXIT_PATHS
    from .audit import audit as run_audit

    if not paths:
        paths = (*EXIT_PATHS, ENGINE_RESTART) if restart_engine else EXIT_PATHS
    try:
        outcome = run_audit(
            engine.connect(),
            paths,
            say=click.echo,
            restart_engine=restart_engine,
            run_options=("--allow-no-limits",) if allow_no_limits else (),
            allow_unsearched=allow_unsearched,
        )
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    broken = f"; exit path(s) not taken: {', '.join(outcome.broken)}" if outcome.broken else ""
    click.echo(f"qsandbox: audit found {outcome.hits} hit(s){broken}", err=True)
    sys.exit(1 if outcome.hits or outcome.broken else 0)


@main.command(epilog=KEY_ORDER)
@key_source_options
@click.option(
    "--platform",
    type=click.Choice(["ibm", "shared"]),
    default="ibm",
    show_default=True,
    help="ibm: IBM Cloud IAM. shared: the emulator from `qsandbox platform up`.",
)
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="HOST", help="Also allow HTTPS to HOST (relay).")
@click.option(
    "--connect-to", "connect_to", multiple=True, metavar="HOST:443:ADDR:PORT", help="As for `run` (a private endpoint)."
)
@click.pass_context
def revoke(
    ctx: click.Context,
    token_stdin: bool,
    token_file: str | None,
    token_env: str | None,
    token_command: str | None,
    platform: str,
    allow_hosts: tuple[str, ...],
    connect_to: tuple[str, ...],
) -> None:
    """Delete an API key through IBM Cloud IAM (for a key that has leaked, or after use)."""
    from . import egress, engine, image, localplatform
    from .credentials import KeySource, harden_process
    from .relay import Egress, parse_connect_to
    from .revoke import revoke as revoke_key
    from .settings import IMAGE

    harden_process()
    try:
        secret = KeySource(stdin=token_stdin, file=token_file, env=token_env, command=token_command).read()
        client = engine.connect()
        image.check(client)
        if platform == "shared":
            shared = localplatform.shared(client)
            result = revoke_key(client, IMAGE, secret, network=shared.network, ca_pem=shared.ca_pem)
        else:  # the broker reaches IBM through the relay, like a run
            rules = Egress(egress.allowlist(allow_hosts), dict(parse_connect_to(c) for c in connect_to))
            result = revoke_key(client, IMAGE, secret, network=None, ca_pem=None, egress=rules)
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    click.echo(result.line(), err=True)
    sys.exit(0 if result.ok else int(ExitCode.TOOL))
