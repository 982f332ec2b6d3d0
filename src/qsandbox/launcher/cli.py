"""The command line. Each command turns options into settings and calls one core function."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from .. import __version__
from ..common.errors import ExitCode, QsandboxError

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


def _fail(e: QsandboxError, debug: bool) -> None:
    if debug:
        raise e
    click.echo(f"qsandbox: {e}", err=True)
    sys.exit(int(e.exit_code))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qsandbox")
@click.option("--debug", is_flag=True, help="Show tracebacks for qsandbox's own errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Run Qiskit scripts on machines you do not trust.

    The IBM Quantum API key goes into a throwaway, hardened container through a tmpfs (RAM only),
    the script runs against QiskitRuntimeService unchanged, and container and key are destroyed
    when it ends, however it ends.
    """
    ctx.obj = {"debug": debug}


@main.command()
@click.option(
    "--base-image", default=None, metavar="NAME", help="Base image with python3 and venv [default: python:3.12-slim]."
)
@click.option(
    "--context",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory with the Dockerfile [default: this checkout].",
)
@click.pass_context
def build(ctx: click.Context, base_image: str | None, context: Path | None) -> None:
    """Build the sandbox image qsandbox:VERSION with the pinned Qiskit stack."""
    from . import engine, image
    from .settings import IMAGE

    try:
        client = engine.connect(timeout=1800)
        image_id = image.build(
            client,
            base=base_image or image.DEFAULT_BASE,
            context=context,
            say=lambda line: click.echo(line, err=True),
        )
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
) -> None:
    """Run SCRIPT [ARGS]... in a fresh sandbox with the API key in RAM only.

    Only the script is sent in, to /work, unless --include or --workdir name more (nothing of
    this machine is mounted); what it writes to /output comes back to --output DIR. It finds its account the way
    QiskitRuntimeService() always does (~/.qiskit, here a tmpfs), and REST scripts read the key
    from the file named by $QISKIT_IBM_TOKEN_FILE. Its exit code is passed through; bad input and
    refusals before anything starts exit 2 (the message names the remedy), qsandbox's or the
    engine's own failures 125, --timeout 124, Ctrl-C 130, SIGTERM 143, SIGHUP 129.
    """
    from .credentials import KeySource, harden_process
    from .run import run as run_script
    from .settings import Hardening, RunSettings, parse_size

    harden_process()
    try:
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
        )
        if no_redact:
            click.echo(
                "qsandbox: WARNING: --no-redact: whatever the script prints, the API key included, "
                "reaches this terminal, its scrollback and any log of it",
                err=True,
            )
        result = run_script(settings, source)
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    click.echo(result.summary(), err=True)
    sys.exit(result.exit_code if not result.leftovers else int(ExitCode.TOOL))


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
@click.pass_context
def platform_up(ctx: click.Context, token_ttl: int | None) -> None:
    """Start the shared emulator (accepts any well-formed key) on its internal network."""
    from . import engine, image, localplatform
    from .settings import IMAGE

    try:
        client = engine.connect()
        image.check(client)
        p = localplatform.up(client, IMAGE, token_ttl=token_ttl)
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
@click.pass_context
def audit(ctx: click.Context, paths: tuple[str, ...], restart_engine: str | None, allow_no_limits: bool) -> None:
    """Send a canary key through real runs and search every place a key could leak.

    Prints each place searched and its number of hits; exits 1 on any hit, or when a path was not
    taken as asked (wrong exit code, or the script never saw the key): its search proves nothing.
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
@click.pass_context
def revoke(
    ctx: click.Context,
    token_stdin: bool,
    token_file: str | None,
    token_env: str | None,
    token_command: str | None,
    platform: str,
) -> None:
    """Delete an API key through IBM Cloud IAM (for a key that has leaked, or after use)."""
    from . import engine, image, localplatform
    from .credentials import KeySource, harden_process
    from .revoke import revoke as revoke_key
    from .settings import IMAGE

    harden_process()
    try:
        secret = KeySource(stdin=token_stdin, file=token_file, env=token_env, command=token_command).read()
        client = engine.connect()
        image.check(client)
        network, ca_pem = None, None
        if platform == "shared":
            shared = localplatform.shared(client)
            network, ca_pem = shared.network, shared.ca_pem
        result = revoke_key(client, IMAGE, secret, network=network, ca_pem=ca_pem)
    except QsandboxError as e:
        _fail(e, ctx.obj["debug"])
    click.echo(result.line(), err=True)
    sys.exit(0 if result.ok else int(ExitCode.TOOL))
