"""The command line. Each command turns options into settings and calls one core function.

Errors have one boundary (`QsandboxGroup.invoke`): a QsandboxError anywhere below becomes its one
line and its exit code there; anything else is a bug and keeps its traceback. Options shared by
`run` and `batch` live in options.py; configuration files and locks in config.py.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from ... import __version__
from ...common.errors import ExitCode, QsandboxError, UsageError
from ...common.text import shown
from . import config as config_mod
from .options import (
    CONFIG_HELP,
    KEY_ORDER,
    check_inputs,
    check_script,
    check_source,
    key_source,
    key_source_options,
    run_options,
    settings_for,
)

if TYPE_CHECKING:
    from ..run.report import Report


def _write_reports(report: Report, json_report: Path | None, junit_report: Path | None) -> None:
    if json_report is not None:
        report.write_json(json_report)
    if junit_report is not None:
        report.write_junit(junit_report)


def _fail(e: QsandboxError, debug: bool) -> None:
    """The error boundary's answer: one line, whatever it names (a file name, a host or a message
    from the sandbox can hold escapes), and the error's exit code."""
    if debug:
        raise e
    click.echo(f"qsandbox: {shown(str(e))}", err=True)
    sys.exit(int(e.exit_code))


def _configurable(command: click.Command) -> dict[str, click.Option]:
    """The command's options a configuration file or a QSANDBOX_* variable may set, by long name."""
    out = {}
    for p in command.params:
        if isinstance(p, click.Option) and isinstance(p.envvar, list):
            long_name = next(o for o in p.opts if o.startswith("--")).removeprefix("--")
            if p.envvar and p.envvar[0] == config_mod.envvar(long_name):
                out[long_name] = p
    return out


class QsandboxCommand(click.Command):
    """A command that holds to the lab's locked options before it does anything."""

    def invoke(self, ctx: click.Context) -> Any:
        cfg: config_mod.Config | None = (ctx.find_root().obj or {}).get("config")
        for name, setting in (cfg.locked if cfg else {}).items():
            param = _configurable(self).get(name)
            if param is None or param.name is None:
                continue
            source = ctx.get_parameter_source(param.name)
            if source not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
                continue
            if ctx.params[param.name] != param.type_cast_value(ctx, setting.value):
                given = "the command line" if source is ParameterSource.COMMANDLINE else "a QSANDBOX_* variable"
                raise UsageError(
                    f"--{name} from {given} is refused: the lab's configuration {shown(setting.origin)} locks "
                    f"{name} = {_toml(setting.value)}"
                )
        return super().invoke(ctx)


class QsandboxGroup(click.Group):
    """The one error boundary of every command (see the module's docstring)."""

    command_class = QsandboxCommand

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QsandboxError as e:
            _fail(e, bool((ctx.find_root().obj or {}).get("debug")))


QsandboxGroup.group_class = QsandboxGroup


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _apply_config(group: click.Group, ctx: click.Context) -> config_mod.Config:
    """Read the configuration files into click's default_map, each value checked as its option would."""
    commands = {name: cmd for name, cmd in group.commands.items() if not isinstance(cmd, click.Group)}
    known = {name for cmd in commands.values() for name in _configurable(cmd)}
    cfg = config_mod.load(known)
    default_map: dict[str, dict[str, Any]] = {}
    for cmd_name, cmd in commands.items():
        options = _configurable(cmd)
        for name, setting in cfg.values.items():
            param = options.get(name)
            if param is None or param.name is None:
                continue
            try:
                param.type_cast_value(click.Context(cmd, info_name=cmd_name), setting.value)
            except click.BadParameter as e:
                raise UsageError(
                    f"configuration {shown(setting.origin)}: {name} = {_toml(setting.value)}: {e.message}"
                ) from None
            default_map.setdefault(cmd_name, {})[param.name] = setting.value
    ctx.default_map = default_map
    return cfg


@click.group(cls=QsandboxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qsandbox")
@click.option("--debug", is_flag=True, help="Show tracebacks for qsandbox's own errors.")
@click.option(
    "--ssh-client",
    is_flag=True,
    envvar="QSANDBOX_SSH_CLIENT",
    help="Reach an ssh:// engine (DOCKER_HOST=ssh://user@host) with the ssh command, honouring "
    "~/.ssh/config and the agent: the default, as the docker CLI does. QSANDBOX_SSH_CLIENT=0 uses "
    "paramiko inside the launcher instead (pip install 'qsandbox[paramiko]').",
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
    ctx.obj["config"] = _apply_config(main, ctx)


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
@click.option("--pull", is_flag=True, help="Pull the base image again first, for its security updates.")
def build(base_image: str | None, offline_base: bool, pull: bool) -> None:
    """Build the sandbox image qsandbox:VERSION with the pinned Qiskit stack, from this installation."""
    from ..core.settings import IMAGE
    from ..engine import client as engine
    from ..engine import image, offlinebase

    def say(line: str) -> None:
        click.echo(line, err=True)

    if pull and offline_base:
        raise UsageError("--pull needs a registry; --offline-base builds without one: give one of them")
    client = engine.connect(timeout=1800)
    if offline_base:
        base = offlinebase.ensure(client, base_image or offlinebase.OFFLINE_BASE, say=say)
    else:
        base = base_image or image.DEFAULT_BASE
    image_id = image.build(client, base=base, say=say, pull=pull)
    click.echo(f"qsandbox: built {IMAGE} ({image_id[7:19]})", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON document instead of lines.")
def doctor(as_json: bool) -> None:
    """Check the engine, the image, and the hardening from inside a probe container."""
    from ..checks.doctor import checks

    found: list[Any] = []
    ok = checks(found.append if as_json else lambda c: click.echo(c.line()))
    if as_json:
        click.echo(json.dumps({"ok": ok, "checks": [c.as_dict() for c in found]}, indent=2))
    if not ok:
        sys.exit(int(ExitCode.FAILURE))


RUN_HELP = """\b
Everything after SCRIPT is the script's own, as with `docker run IMAGE ARGS`: qsandbox's options
come before it (`qsandbox run --timeout 10m fit.py --timeout 3` gives the script `--timeout 3`);
`--` may end them, for a script whose name starts with a dash.
"""


@main.command(
    context_settings={"allow_interspersed_args": False}, epilog=RUN_HELP + "\n" + KEY_ORDER + "\n" + CONFIG_HELP
)
@click.argument("script", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@run_options
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory that receives what the script wrote to /output, when it ends (also after an error, "
    "a timeout or Ctrl-C).",
)
def run(script: Path, args: tuple[str, ...], output: Path | None, **o: Any) -> None:
    """Run SCRIPT [ARGS]... in a fresh sandbox with the API key in RAM only.

    Only the script is sent in, to /work, unless --include or --workdir name more (nothing of
    this machine is mounted); what it writes to /output comes back to --output DIR. It finds its account the way
    QiskitRuntimeService() always does (~/.qiskit, here a tmpfs), and REST scripts read the key
    from the file named by $QISKIT_IBM_TOKEN_FILE. Its exit code is passed through; bad input and
    refusals before anything starts exit 2 (the message names the remedy), qsandbox's or the
    engine's own failures 125, --timeout 124, Ctrl-C 130, SIGTERM 143, SIGHUP 129.
    """
    from ..core.credentials import harden_process
    from ..run import report
    from ..run.run import run as run_script

    harden_process()
    json_report, junit_report = o["json_report"], o["junit_report"]
    try:
        # Before the engine, in the order a user needs them (option values: click, as it read them).
        check_script(script, args)
        check_inputs(script, o)
        settings = settings_for(script, o, args=args, output=output)
        report.check_writable(json_report, junit_report)
        source = key_source(o)
        check_source(source, o["platform"])
        if o["no_redact"]:
            click.echo(
                "qsandbox: WARNING: --no-redact: whatever the script prints, the API key included, "
                "reaches this terminal, its scrollback and any log of it",
                err=True,
            )
        # --junit's system-out: what reached the terminal, already masked by the run's output pump.
        capture = report.Capture() if json_report or junit_report else None
        if capture is None:
            result = run_script(settings, source)
        else:
            result = run_script(
                settings, source, out=capture.tee(sys.stdout.buffer), err=capture.tee(sys.stderr.buffer)
            )
    except QsandboxError as e:
        if json_report or junit_report:  # CI reads the report whatever happened
            failed = report.Report(
                command="run",
                exit_code=int(e.exit_code),
                duration=0.0,
                ended="error",
                entries=[report.Entry(script=str(script), exit_code=int(e.exit_code), ended="error", error=str(e))],
            )
            with contextlib.suppress(QsandboxError):  # the run's own error is the one to report
                _write_reports(failed, json_report, junit_report)
        raise
    click.echo(result.summary(), err=True)
    code = result.exit_code if not result.leftovers else int(ExitCode.TOOL)
    _write_reports(
        report.Report(
            command="run",
            exit_code=code,
            duration=result.duration,
            ended=report.ended(result),
            entries=[report.entry(str(script), result, capture.text() if capture else None)],
            revocation=result.revocation,
            image_id=result.image_id,
        ),
        json_report,
        junit_report,
    )
    sys.exit(code)


LAB_HELP = """\b
The notebooks and files of DIR (default: the current directory) go in as --workdir sends them; the
browser reaches JupyterLab through this process (a random port of 127.0.0.1, Jupyter's own token
in the URL; nothing is served without it). End the lab with File > Shut Down, Ctrl-C, --timeout or
a signal: what changed under /work comes back into DIR, masked, and a file changed here meanwhile
is kept, the sandbox's version written beside it (NAME.sandbox.EXT). --output OUT: the work goes
to OUT instead, and DIR is left untouched. JupyterLab lives in an image derived on first use
(`qsandbox images` lists it); --requirements adds packages to it. Exit codes as for run: 0 after
File > Shut Down, 130 Ctrl-C, 124 --timeout, 143 SIGTERM, 129 SIGHUP; 2 nothing started.
"""


@main.command(epilog=LAB_HELP + "\n" + KEY_ORDER + "\n" + CONFIG_HELP)
@click.argument("directory", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@run_options
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory that receives what changed under /work when the lab ends, instead of DIR (left untouched).",
)
@click.option("--no-browser", is_flag=True, help="Print the lab's URL, open no browser.")
def lab(directory: Path | None, output: Path | None, no_browser: bool, **o: Any) -> None:
    """JupyterLab in a fresh sandbox, in this machine's browser; the key never leaves the sandbox."""
    from ..core.credentials import harden_process
    from ..run.lab import run as run_lab
    from .options import lab_settings_for as lab_settings

    harden_process()
    if o["json_report"] or o["junit_report"]:
        raise UsageError("--json-report and --junit are for run and batch, not for a lab")
    directory = directory or Path.cwd()
    settings = lab_settings(directory, o, output)
    source = key_source(o)
    check_source(source, o["platform"])
    if o["no_redact"]:
        click.echo("qsandbox: WARNING: --no-redact: the key and IAM tokens are not masked in the lab's log", err=True)
    result = run_lab(directory, settings, source, open_browser=not no_browser)
    click.echo(result.summary(), err=True)
    sys.exit(result.exit_code if not result.leftovers else int(ExitCode.TOOL))


BATCH_HELP = """\b
SCRIPTs (.py files and .ipynb notebooks) take no arguments; options may come before or after them.
Each script gets every run option: its own PEP 723 dependencies (or --requirements, for the
scripts without a block), --include paths relative to its own directory, --workdir holding it.
\b
Exit codes: 0 every script passed (exit 0, nothing left behind); 1 one or more
failed or were not run (--fail-fast); 2 nothing started (bad input, a refusal);
125 qsandbox or the engine left something behind or --revoke-after failed;
130/143/129 the batch was ended by Ctrl-C/SIGTERM/SIGHUP (every sandbox torn down).
"""


@main.command(epilog=BATCH_HELP + "\n" + KEY_ORDER + "\n" + CONFIG_HELP)
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
@run_options
def batch(
    scripts: tuple[Path, ...], jobs: int, ahead: int | None, fail_fast: bool, output: Path | None, **o: Any
) -> None:
    """Run each SCRIPT in its own fresh sandbox, --jobs at a time, under one key read once.

    Each script's output is printed whole when it ends; a summary table follows. With --platform
    local one emulator serves the batch; --revoke-after revokes the key once, after the last script.
    Ctrl-C, SIGTERM and SIGHUP end every live sandbox and start no more.
    """
    from ..core.credentials import harden_process
    from ..run import report
    from ..run.batch import Batch

    harden_process()
    json_report, junit_report = o["json_report"], o["junit_report"]
    for script in scripts:
        check_script(script)
        check_inputs(script, o)
    stems = [s.stem for s in scripts]
    if output is not None and len(set(stems)) < len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise UsageError(f"--output: two scripts are named {twice[0]}, so their DIR/<stem> would clash: rename one")
    runs = [(str(s), settings_for(s, o, output=output / s.stem if output else None, fill_in=True)) for s in scripts]
    report.check_writable(json_report, junit_report)
    source = key_source(o)
    check_source(source, o["platform"])
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
        revoke_after=o["revoke_after"],
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
    sys.exit(result.exit_code)


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
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="How to list."
)
@click.option("-q", "--quiet", is_flag=True, help="Only the images' names, one a line.")
def images(prune: bool, days: float, prune_all: bool, fmt: str, quiet: bool) -> None:
    """List the sandbox images and those derived for scripts' own dependencies: size and last use.

    Last use is recorded by qsandbox in ~/.cache/qsandbox/last-used.json (an image's labels cannot
    change); an image never used from this account counts from its creation.
    """
    import dataclasses
    import time

    from ..engine import client as engine
    from ..engine import deps

    client = engine.connect()
    if prune:
        removed = deps.prune(client, days=None if prune_all else days, say=click.echo)
        click.echo(f"qsandbox: pruned {removed} derived image(s)", err=True)
        return
    rows = deps.listing(client)
    if quiet:
        for r in rows:
            click.echo(r.tag)
        return
    if fmt == "json":
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    click.echo(f"{'IMAGE':<42} {'KIND':<8} {'SIZE':>8}  {'CREATED':<19}  {'LAST USED':<16}  REQUIREMENTS")
    for r in rows:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.last_used)) if r.last_used else "-"
        click.echo(f"{r.tag:<42} {r.kind:<8} {r.size / 1e6:>5.0f} MB  {r.created:<19}  {used:<16}  {r.requirements}")


@main.command()
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Also what may still be in use: running sandboxes, emulators and proxies (another terminal's run, "
    "another user's, a parallel CI job) and networks with containers on them. Asks first, unless --yes.",
)
@click.option("-y", "--yes", is_flag=True, help="With --all: do not ask.")
@click.option("--dry-run", is_flag=True, help="List what would be removed, remove nothing.")
def sweep(everything: bool, yes: bool, dry_run: bool) -> None:
    """Remove what qsandbox left behind (after an engine crash, a killed launcher).

    By default only what no live launcher holds, as `docker container prune` would: labelled
    containers that exited or never started, and labelled networks with nothing on them, each
    older than a minute. The shared emulator is `qsandbox platform down`'s, never swept.
    """
    from ..checks import sweep as sweeping
    from ..engine import client as engine

    client = engine.connect()
    found = sweeping.select(client, everything=everything)
    if dry_run:
        for c in found:
            click.echo(f"would remove {c.line()}: {c.state}")
        click.echo(f"qsandbox: {len(found)} object(s) would be swept (--dry-run: nothing removed)", err=True)
        return
    live = [c for c in found if c.live]
    if live and not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"--all would remove {len(live)} object(s) that may be in use (a running sandbox ends its "
                "script): add --yes to confirm, or --dry-run to list them"
            )
        for c in live:
            click.echo(f"in use: {c.line()}: {c.state}", err=True)
        if not click.confirm(f"Remove these {len(live)} object(s) too?", err=True):
            raise UsageError("nothing was removed")
    for line in sweeping.remove(client, found):
        click.echo(f"removed {line}")
    click.echo(f"qsandbox: swept {len(found)} object(s)", err=True)


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
@click.pass_context
def show_config(ctx: click.Context, as_json: bool) -> None:
    """Show the options' values in force for `run` and `batch`, and where each came from.

    \b
    Sources, lowest to highest: default, /etc/qsandbox/config.toml (the lab's; its [locked]
    table is in force for everyone), $XDG_CONFIG_HOME/qsandbox/config.toml, a QSANDBOX_<OPTION>
    variable, the command line.
    """
    import os

    cfg: config_mod.Config = ctx.find_root().obj["config"]
    options: dict[str, tuple[click.Option, click.Context]] = {}
    for name in ("run", "batch"):
        command = main.commands[name]
        here = click.Context(command, info_name=name)
        options.update({k: (v, here) for k, v in _configurable(command).items() if k not in options})
    rows = []
    for name, (param, here) in options.items():
        value: Any = param.get_default(here)
        if param.multiple and not isinstance(value, (list, tuple)):
            value = []  # click's "unset" for a repeatable option
        source = "default"
        if name in cfg.values:
            setting = cfg.values[name]
            value, source = setting.value, setting.origin
        for var in param.envvar or []:
            if var in os.environ:
                value, source = os.environ[var], f"env {var}"
                break
        if name in cfg.locked:
            setting = cfg.locked[name]
            refused = f"; {source} refused" if source.startswith("env ") and value != setting.value else ""
            value, source = setting.value, f"locked by {setting.origin}{refused}"
        if isinstance(value, tuple):
            value = list(value)
        rows.append((name, value, source))
    if as_json:
        click.echo(json.dumps({n: {"value": v, "source": src} for n, v, src in rows}, indent=2, default=str))
        return
    width = max(len(n) + len(_toml(v)) for n, v, _ in rows if v is not None) + 3
    for name, value, source in rows:
        text = f"{name} = {_toml(value)}" if value is not None else f"# {name} (unset)"
        click.echo(f"{text:<{width}}  # {source}")
    click.echo("qsandbox: read " + (", ".join(str(f) for f in cfg.files) or "no configuration file"), err=True)


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
def platform_up(token_ttl: int | None, queue_time: float | None) -> None:
    """Start the shared emulator (accepts any well-formed key) on its internal network."""
    from ..core.settings import IMAGE
    from ..engine import client as engine
    from ..engine import image, localplatform

    client = engine.connect()
    image.check(client)
    p = localplatform.up(client, IMAGE, token_ttl=token_ttl, queue_time=queue_time)
    click.echo(f"qsandbox: shared platform up on network {p.network}; instance {p.instance}", err=True)


@platform.command("down")
def platform_down() -> None:
    """Stop the shared emulator and remove its network."""
    from ..engine import client as engine
    from ..engine import localplatform

    found = localplatform.down(engine.connect())
    click.echo("qsandbox: shared platform down" if found else "qsandbox: no shared platform was running", err=True)


@main.command()
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Choice(
        ["success", "error", "timeout", "sigint", "sigterm", "sighup", "sigkill", "engine-restart", "lab"]
    ),
    help="Exit path to audit (repeatable) [default: all; engine-restart only with --engine-restart; lab, a "
    "`qsandbox lab` session whose kernel writes the key into /work, only when named].",
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
def audit(
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
    from ..checks.audit import ENGINE_RESTART, EXIT_PATHS
    from ..checks.audit import audit as run_audit
    from ..engine import client as engine

    if not paths:
        paths = (*EXIT_PATHS, ENGINE_RESTART) if restart_engine else EXIT_PATHS
    outcome = run_audit(
        engine.connect(),
        paths,
        say=click.echo,
        restart_engine=restart_engine,
        run_options=("--allow-no-limits",) if allow_no_limits else (),
        allow_unsearched=allow_unsearched,
    )
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
def revoke(
    token_stdin: bool,
    token_file: str | None,
    token_env: str | None,
    token_command: str | None,
    platform: str,
    allow_hosts: tuple[str, ...],
    connect_to: tuple[str, ...],
) -> None:
    """Delete an API key through IBM Cloud IAM (for a key that has leaked, or after use)."""
    from ..core.credentials import harden_process
    from ..core.settings import IMAGE
    from ..engine import client as engine
    from ..engine import image, localplatform
    from ..run import egress
    from ..run.relay import Egress, parse_connect_to
    from ..run.revoke import Broker

    harden_process()
    source = key_source(
        {"token_stdin": token_stdin, "token_file": token_file, "token_env": token_env, "token_command": token_command}
    )
    check_source(source, "ibm")
    secret = source.read()
    client = engine.connect()
    image.check(client)
    if platform == "shared":
        shared = localplatform.shared(client)
        result = Broker(client, IMAGE, secret, network=shared.network, ca_pem=shared.ca_pem).revoke()
    else:  # the broker reaches IBM through the relay, like a run
        rules = Egress(egress.allowlist(allow_hosts), dict(parse_connect_to(c) for c in connect_to))
        result = Broker(client, IMAGE, secret, egress=rules).revoke()
    click.echo(result.line(), err=True)
    sys.exit(0 if result.ok else int(ExitCode.TOOL))
