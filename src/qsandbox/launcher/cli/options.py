"""The options `run` and `batch` share, the one builder that turns them into RunSettings, and the
checks made before any engine is contacted.

One list of options, applied to both commands by `run_options`, so their names, help, defaults and
variables cannot drift apart; one builder, `settings_for`, so both turn them into the same settings;
and `check_before_engine`, so both refuse bad input in the order a user needs it: the option values
(click, as it reads them), the script and its inputs, the key source; only then the engine.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from ...common.errors import UsageError
from ...common.text import shown
from ..core.credentials import KeySource
from ..core.units import DURATION, SIZE
from .config import envvar

F = TypeVar("F", bound=Callable[..., Any])

KEY_ORDER = """\b
The API key is never a command-line value, a configuration value or a QSANDBOX_* variable. Sources,
in order:
  --token-stdin         first line of standard input
  --token-file PATH     a file (a CI secret file, or /dev/fd/N)
  --token-env NAME      an environment variable (removed before anything starts)
  --token-command CMD   a credential helper's standard output (its first line)
  (none, on a terminal) a hidden prompt
"""

CONFIG_HELP = """\b
Defaults, lowest to highest: the option's own, /etc/qsandbox/config.toml (the lab's, which may
lock options), $XDG_CONFIG_HOME/qsandbox/config.toml, QSANDBOX_<OPTION> variables, the command
line; `qsandbox config` shows what is in force and where it came from.
"""


class ConfigurableOption(click.Option):
    """An option a QSANDBOX_* variable or a configuration file may set. A bad value names where it
    came from: the variable only when it came from there (click names it whatever the source)."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        hint = " / ".join(f"'{o}'" for o in self.opts)
        source = ctx.get_parameter_source(self.name) if ctx is not None and self.name else None
        if source is ParameterSource.ENVIRONMENT:
            for var in self.envvar or []:
                if var in os.environ:
                    return f"{hint} (from {var})"
        if source is ParameterSource.DEFAULT_MAP:
            return f"{hint} (from the configuration)"
        return hint


def _opt(*decls: str, also: tuple[str, ...] = (), **kwargs: Any) -> Callable[[F], F]:
    """A configurable option: its variable is QSANDBOX_<LONG NAME> (then `also`), shown in --help."""
    long_name = next(d for d in decls if d.startswith("--")).removeprefix("--")
    return click.option(*decls, cls=ConfigurableOption, envvar=[envvar(long_name), *also], show_envvar=True, **kwargs)


def _apply(f: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        f = option(f)
    return f


def key_source_options(f: F) -> F:
    """The four key-source options, in their documented order (KEY_ORDER); never a variable."""
    return _apply(
        f,
        [
            click.option("--token-stdin", is_flag=True, help="Read the key from the first line of stdin."),
            click.option("--token-file", metavar="PATH", help="Read the key from a file."),
            click.option("--token-env", metavar="NAME", help="Read the key from this environment variable."),
            click.option(
                "--token-command", metavar="CMD", help="Run a credential helper; the first line it prints is the key."
            ),
        ],
    )


def egress_options(f: F) -> F:
    """Where the sandbox may connect on the real platform (launcher/run/egress.py)."""
    return _apply(
        f,
        [
            _opt(
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
            _opt(
                "--allow-host",
                "allow_hosts",
                multiple=True,
                metavar="HOST",
                help="Also allow HTTPS (443) to HOST through the relay (repeatable; the variable: "
                "hosts separated by spaces).",
            ),
            _opt(
                "--connect-to",
                "connect_to",
                multiple=True,
                metavar="HOST:443:ADDR:PORT",
                help="Connect to ADDR:PORT when the sandbox asks for HOST:443 (as curl's --connect-to): a private "
                "endpoint, or a stand-in platform. HOST must still be allowed (repeatable; the variable: entries "
                "separated by spaces).",
            ),
            _opt(
                "--ca-file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=None,
                help="A PEM CA bundle the sandbox trusts instead of the image's (a TLS-inspecting "
                "corporate proxy, a stand-in platform).",
            ),
        ],
    )


def report_options(f: F) -> F:
    """--json and --junit: machine-readable reports of a run or a batch (launcher/run/report.py)."""
    return _apply(
        f,
        [
            click.option(
                "--json",
                "json_report",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                metavar="FILE",
                help="Write a JSON report (schema: qsandbox/launcher/report.schema.json, version 1).",
            ),
            click.option(
                "--junit",
                "junit_report",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                metavar="FILE",
                help="Write a JUnit XML report (one testcase per script; redacted output as system-out).",
            ),
        ],
    )


def run_options(f: F) -> F:
    """Every option of `run` that makes sense for each script of a `batch` too."""
    return _apply(
        f,
        [
            key_source_options,
            _opt(
                "--instance",
                also=("QISKIT_IBM_INSTANCE",),
                default=None,
                help="Instance CRN or name.",
            ),
            _opt(
                "--channel",
                also=("QISKIT_IBM_CHANNEL",),
                type=click.Choice(["ibm_quantum_platform", "ibm_cloud"]),
                default="ibm_quantum_platform",
                show_default=True,
                help="The account's channel.",
            ),
            _opt(
                "--include",
                "includes",
                multiple=True,
                type=click.Path(path_type=Path),  # relative to the script's directory: checked there
                metavar="PATH",
                help="Also send this file or directory in (repeatable), at its path relative to the script's "
                "directory. Only the script is sent otherwise. A file named here is sent whatever its name.",
            ),
            _opt(
                "--workdir",
                type=click.Path(exists=True, file_okay=False, path_type=Path),
                default=None,
                help="Send this project directory (which holds the script) whole, as /work. Credential stores "
                "and private keys in it (.ssh, .git, .env*, .pypirc, .kube, id_rsa*, *.pem, ...) are left "
                "out, each named; --include sends one on purpose.",
            ),
            _opt("--input-limit", type=SIZE, default="100m", show_default=True, help="Most the inputs may come to."),
            _opt("--output-limit", type=SIZE, default="256m", show_default=True, help="Size of the /output tmpfs."),
            _opt(
                "--output-merge",
                is_flag=True,
                help="Let --output DIR hold files already; a file that exists is never overwritten (it is "
                "refused and named).",
            ),
            _opt(
                "--output-keep-modes",
                is_flag=True,
                help="Delivered files keep their exec bits (by default none comes back: nothing delivered is "
                "runnable).",
            ),
            _opt(
                "--raw-output",
                is_flag=True,
                help="Pass the script's control sequences through: by default only newline, tab and colours "
                "reach a terminal (and a batch's labelled blocks, wherever they go), so a script cannot move "
                "the cursor, rewrite qsandbox's lines, set the title or the clipboard.",
            ),
            _opt(
                "--requirements",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=None,
                metavar="FILE",
                help="The script's own dependencies (one requirement a line), for a script or notebook without "
                "PEP 723 `# /// script` metadata: installed once into an image derived from the sandbox's, "
                "then reused.",
            ),
            _opt(
                "--image",
                "image_name",
                default=None,
                metavar="NAME",
                help="A lab's own image, built FROM this version's qsandbox image (checked by its "
                "qsandbox.version label and entry point) [default: qsandbox:VERSION].",
            ),
            _opt(
                "--timeout",
                type=DURATION,
                default=None,
                help="End the script after this long (exit 124): seconds, or 10m, 1h30m.",
            ),
            _opt(
                "--memory",
                type=SIZE,
                default="2g",
                show_default=True,
                help="Memory limit, no swap (512m, 2g, 1.5g, 2GB).",
            ),
            _opt(
                "--cpus",
                type=click.FloatRange(min=0.01),
                default=None,
                metavar="N",
                help="CPU limit, as `docker run --cpus` [default: every CPU the engine has; never more].",
            ),
            _opt(
                "--pids",
                type=click.IntRange(min=1),
                default=1024,
                show_default=True,
                help="Process/thread limit (the relay's threads count too: two per open connection).",
            ),
            _opt(
                "--platform",
                type=click.Choice(["ibm", "local", "shared"]),
                default="ibm",
                show_default=True,
                help="ibm: the real IBM Quantum Platform. local: an emulated one on an internal network, "
                "for this run (or batch) only. shared: the emulator from `qsandbox platform up`. With local "
                "or shared and no key source, a throwaway key is made.",
            ),
            _opt(
                "--queue-time",
                type=DURATION,
                default=None,
                help="--platform local: keep each job QUEUED, then RUNNING, for about this long, as a real "
                "queue does, to rehearse waiting, timeouts and cancelling [default: 0].",
            ),
            _opt(
                "--token-mode",
                type=click.Choice(["api-key", "short-lived"]),
                default="api-key",
                show_default=True,
                help="short-lived: exchange the key for an IAM access token outside the sandbox; only that "
                "token (valid for at most an hour, refreshed while the run lasts) enters it.",
            ),
            _opt(
                "--revoke-after",
                is_flag=True,
                help="When the run (or the batch's last script) ends, however it ends (short of SIGKILL), delete "
                "the API key through IBM Cloud IAM, as IBM advises after using a key on an untrusted machine.",
            ),
            _opt(
                "--strict",
                is_flag=True,
                help="Refuse to run when a preflight check warns (host swap, engine debug mode, an engine other "
                "users can reach).",
            ),
            _opt(
                "--allow-no-limits",
                is_flag=True,
                help="Accept an engine that cannot apply memory, pids and CPU limits (rootless Docker or "
                "Podman on cgroup v1). Refused while host swap is on. Has no effect where limits work.",
            ),
            _opt(
                "--no-redact",
                is_flag=True,
                help="Debugging only: do not mask the key and IAM tokens in the script's output.",
            ),
            _opt(
                "--no-cancel-on-abort",
                is_flag=True,
                help="On Ctrl-C/SIGTERM/timeout, leave the script's Runtime jobs running.",
            ),
            egress_options,
            report_options,
        ],
    )


# -- before the engine ---------------------------------------------------------------------------


def key_source(o: Mapping[str, Any]) -> KeySource:
    return KeySource(stdin=o["token_stdin"], file=o["token_file"], env=o["token_env"], command=o["token_command"])


def check_script(script: Path, args: tuple[str, ...] = ()) -> None:
    """The script is there and is a file; a notebook takes no arguments."""
    if not script.is_file():
        raise UsageError(f"script not found: {shown(str(script))}: give the path of a Python file")
    if script.suffix == ".ipynb" and args:
        raise UsageError(
            f"a notebook takes no arguments (got {shown(' '.join(args))}): pass values in a file with --include"
        )


def check_inputs(script: Path, o: Mapping[str, Any]) -> None:
    """What can be told of the inputs without reading them: --workdir holds the script, each
    --include exists (relative to the script's directory). transfer.collect checks the rest."""
    workdir: Path | None = o["workdir"]
    if workdir is not None and workdir.resolve() not in script.resolve().parents:
        raise UsageError(
            f"the script {shown(str(script.resolve()))} is not inside --workdir {shown(str(workdir.resolve()))}: "
            "give the project directory that holds it"
        )
    for named in o["includes"]:
        path = named if named.is_absolute() else script.resolve().parent / named
        if not path.exists() and not path.is_symlink():
            raise UsageError(f"--include {shown(str(named))}: no such file or directory")


def check_source(source: KeySource, platform: str) -> None:
    """The key source is one, and usable: the variable is set, the file readable, the helper on
    PATH; nothing is read (the key is read once, after the engine's checks). A rehearsal without a
    source makes a throwaway key."""
    if platform != "ibm" and source.interactive:
        return
    source.check()
    if source.env is not None and source.env not in os.environ:
        raise UsageError(f"environment variable {shown(source.env)} is not set: export it or choose another source")
    if source.file is not None and not os.access(source.file, os.R_OK):
        why = "no such file" if not os.path.lexists(source.file) else "permission denied"
        raise UsageError(f"cannot read the key file {shown(source.file)}: {why}")
    if source.command is not None:
        try:
            argv = shlex.split(source.command)
        except ValueError as e:
            raise UsageError(f"--token-command: cannot split it as a shell would: {e}") from None
        if not argv:
            raise UsageError("--token-command is empty: give a command that prints the key")
        if shutil.which(argv[0]) is None:
            raise UsageError(f"--token-command: {shown(argv[0])} not found")


def settings_for(
    script: Path,
    o: Mapping[str, Any],
    *,
    args: tuple[str, ...] = (),
    output: Path | None = None,
    fill_in: bool = False,
    lab: bool = False,
) -> Any:
    """The one place options become a RunSettings (for `run`, and for each script of a `batch`).

    `fill_in` (a batch): --requirements serves the scripts without a PEP 723 block of their own, and
    a script with one keeps it; for one script (`run`) having both is refused as ambiguous. `lab`:
    `script` is a lab's directory (launcher/run/lab.py sets its needs)."""
    from ..core.needs import for_script, from_script
    from ..core.settings import IMAGE, Hardening, RunSettings

    requirements = o["requirements"]
    if fill_in and requirements is not None and from_script(script) is not None:
        requirements = None

    return RunSettings(
        platform=o["platform"],
        script=script.resolve(),
        args=args,
        channel=o["channel"],
        instance=o["instance"],
        output=output.resolve() if output else None,
        output_merge=o["output_merge"],
        output_keep_modes=o["output_keep_modes"],
        raw_output=o["raw_output"],
        workdir=o["workdir"],
        includes=o["includes"],
        input_limit=o["input_limit"],
        timeout=o["timeout"],
        hardening=Hardening(memory=o["memory"], cpus=o["cpus"], pids=o["pids"], output_size=o["output_limit"]),
        cancel_on_abort=not o["no_cancel_on_abort"],
        redact=not o["no_redact"],
        strict=o["strict"],
        allow_no_limits=o["allow_no_limits"],
        revoke_after=o["revoke_after"],
        token_mode=o["token_mode"],
        egress=o["egress"],
        allow_hosts=o["allow_hosts"],
        connect_to=o["connect_to"],
        ca_file=o["ca_file"],
        queue_time=o["queue_time"],
        image=o["image_name"] or IMAGE,
        needs=None if lab else for_script(script, requirements),
        lab=lab,  # qsandbox lab (launcher/run/lab.py): `script` is the lab's directory
    )


def lab_settings_for(directory: Path, o: Mapping[str, Any], output: Path | None) -> Any:
    """The run's settings for a lab of `directory` (the shared options, as `run` reads them)."""
    from ..core.needs import from_requirements
    from ..run import lab

    if o["workdir"] is not None:
        raise UsageError("qsandbox lab sends DIR whole: --workdir does not apply (name the directory as DIR)")
    settings = settings_for(directory, {**o, "requirements": None}, args=(lab.MODULE,), output=output, lab=True)
    reqs = from_requirements(o["requirements"]) if o["requirements"] is not None else None
    return replace(settings, workdir=directory.resolve(), needs=lab.needs(reqs))
