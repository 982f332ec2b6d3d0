"""The command line as a user meets it (issue 25), with click's runner and no engine: what reaches
the script, what qsandbox refuses and in which order, sizes and durations, the options `run` and
`batch` share, configuration files, variables and locks, and the one error boundary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qsandbox import __version__
from qsandbox.common.errors import EngineUnavailable, UsageError
from qsandbox.launcher.cli import config
from qsandbox.launcher.cli.commands import main
from qsandbox.launcher.core import credentials
from qsandbox.launcher.core.settings import Hardening, RunSettings
from qsandbox.launcher.engine import client as engine
from qsandbox.launcher.engine.client import EngineInfo

KEY = "k" * 44  # not a secret: nothing here reaches a sandbox
DOCKER = EngineInfo(kind="Docker", version="27", api_version="1.47", rootless=False, log_driver="none", debug=False)


class Stop(UsageError):
    """Raised by the stand-in core function: the command got as far as starting the run."""


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real configuration, no QSANDBOX_* variables, no engine, no hardening of the test process."""
    monkeypatch.setattr(config, "SYSTEM_CONFIG", tmp_path / "etc" / "config.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in list(__import__("os").environ):
        if name.startswith(("QSANDBOX_", "QISKIT_IBM")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(credentials, "harden_process", lambda: None)

    def no_engine(timeout: int = 120) -> Any:
        raise AssertionError("the engine was contacted")

    monkeypatch.setattr(engine, "connect", no_engine)


@pytest.fixture
def script(tmp_path) -> Path:
    s = tmp_path / "bell.py"
    s.write_text("print('hi')\n")
    return s


@pytest.fixture
def started(monkeypatch) -> list[RunSettings]:
    """`qsandbox run` up to the core function: the settings it would run with."""
    from qsandbox.launcher.run import run as run_mod

    seen: list[RunSettings] = []

    def fake_run(settings: RunSettings, source: Any, **_: Any) -> Any:
        seen.append(settings)
        raise Stop("stopped before the engine")

    monkeypatch.setattr(run_mod, "run", fake_run)
    return seen


def invoke(*args: str, input: str | None = KEY + "\n", env: dict[str, str] | None = None) -> Any:
    r = CliRunner().invoke(main, list(args), input=input, env=env)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def last_error(r: Any) -> str:
    return r.stderr.strip().splitlines()[-1]


# -- arguments after SCRIPT are the script's ---------------------------------------------------------


def test_version_and_help():
    r = invoke("--version")
    assert r.exit_code == 0 and __version__ in r.output
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("build", "doctor", "run", "sweep", "config"):
        assert cmd in r.output


def test_run_help_lists_key_sources_in_order():
    r = invoke("run", "--help")
    assert r.exit_code == 0
    order = [r.output.index(s) for s in ("--token-stdin", "--token-file", "--token-env", "--token-command", "prompt")]
    assert order == sorted(order)
    assert "--token " not in r.output  # never a key as a command-line value
    assert "QSANDBOX_MEMORY" in r.output  # the variables are shown; none chooses a key source
    assert not any(f"QSANDBOX_TOKEN_{s}" in r.output for s in ("STDIN", "FILE", "ENV", "COMMAND"))


def test_options_after_the_script_are_the_scripts(script, started):
    r = invoke("run", "--token-stdin", str(script), "--memory", "lots", "--output", "x", "--timeout", "3", "-h")
    assert (r.exit_code, last_error(r)) == (2, "qsandbox: stopped before the engine")
    (s,) = started
    assert s.args == ("--memory", "lots", "--output", "x", "--timeout", "3", "-h")
    assert s.hardening.memory == 2 << 30 and s.timeout is None and s.output is None


def test_double_dash_before_the_script(script, started):
    r = invoke("run", "--token-stdin", "--timeout", "5", "--", str(script), "--timeout", "3")
    assert r.exit_code == 2
    assert started[0].timeout == 5 and started[0].args == ("--timeout", "3")


def test_a_mistyped_option_before_the_script_is_named_with_a_suggestion(script):
    for command in ("run", "batch"):
        r = invoke(command, "--timout", "3", str(script))
        assert r.exit_code == 2
        assert "No such option '--timout'" in r.stderr and "'--timeout'" in r.stderr


def test_a_notebook_takes_no_arguments(tmp_path, started):
    nb = tmp_path / "n.ipynb"
    nb.write_text("{}")
    r = invoke("run", "--token-stdin", str(nb), "a")
    assert (r.exit_code, last_error(r)) == (
        2,
        "qsandbox: a notebook takes no arguments (got a): pass values in a file with --include",
    )
    assert not started


# -- checks in the user's order, all before the engine -----------------------------------------------


def test_option_values_are_checked_in_the_order_given(script):
    r = invoke("run", "--memory", "lots", "--timeout", "0", str(script))
    assert r.exit_code == 2 and "'--memory'" in last_error(r)
    r = invoke("run", "--timeout", "0", "--memory", "lots", str(script))
    assert r.exit_code == 2 and "'--timeout'" in last_error(r)


def test_a_bad_option_value_comes_before_a_missing_script():
    r = invoke("run", "--timeout", "-1", "/nonexistent.py")
    assert r.exit_code == 2 and last_error(r) == "Error: Invalid value for '--timeout': it must be more than 0 seconds"


def test_a_missing_script_comes_before_the_key_source():
    r = invoke("run", "/nonexistent.py", input=None)  # no source, no terminal: that would be the next refusal
    assert (r.exit_code, last_error(r)) == (
        2,
        "qsandbox: script not found: /nonexistent.py: give the path of a Python file",
    )


def test_a_missing_include_comes_before_the_key_source(script):
    r = invoke("run", "--include", "data.csv", str(script), input=None)
    assert (r.exit_code, last_error(r)) == (2, "qsandbox: --include data.csv: no such file or directory")


@pytest.mark.parametrize(
    ("source", "line"),
    [
        (["--token-env", "QSBX_UNSET_VAR"], "environment variable QSBX_UNSET_VAR is not set"),
        (["--token-file", "/nonexistent/key"], "cannot read the key file /nonexistent/key: no such file"),
        (["--token-command", "qsbx-no-such-helper --get"], "--token-command: qsbx-no-such-helper not found"),
        (["--token-stdin", "--token-env", "X"], "give one key source, not --token-stdin and --token-env"),
        ([], "no API key source and no terminal to prompt on"),
    ],
)
def test_an_unusable_key_source_is_refused_before_the_engine(script, source, line):
    r = invoke("run", *source, str(script), input=None)  # engine.connect raises if it is reached
    assert r.exit_code == 2
    assert last_error(r).startswith(f"qsandbox: {line}")


def test_a_rehearsal_needs_no_key_source(script, started):
    r = invoke("run", "--platform", "local", str(script), input=None)
    assert r.exit_code == 2 and started and started[0].platform == "local"


# -- sizes, durations, CPUs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "size"), [("2GB", 2 << 30), ("1.5g", 3 << 29), ("512m", 512 << 20), ("2g", 2 << 30), ("100", 100)]
)
def test_sizes_as_docker_takes_them(script, started, given, size):
    invoke("run", "--token-stdin", "--memory", given, "--output-limit", given, "--input-limit", given, str(script))
    s = started[0]
    assert s.hardening.memory == s.hardening.output_size == s.input_limit == size


@pytest.mark.parametrize(("given", "seconds"), [("90", 90), ("2.5", 2.5), ("10m", 600), ("1h30m", 5400)])
def test_durations(script, started, given, seconds):
    invoke("run", "--token-stdin", "--timeout", given, "--queue-time", given, str(script))
    assert started[0].timeout == started[0].queue_time == seconds


@pytest.mark.parametrize("bad", ["lots", "-1", "0", "2 g", "1h1h", "10x"])
def test_bad_sizes_and_durations_are_refused_by_name(script, bad):
    for option in ("--memory", "--timeout"):
        r = invoke("run", option, bad, str(script))
        assert r.exit_code == 2 and f"Invalid value for '{option}'" in last_error(r), r.stderr


def test_cpus_default_to_the_engines_and_never_exceed_them(script, started):
    two = EngineInfo(**{**DOCKER.__dict__, "ncpu": 2})
    assert Hardening().for_engine(two).cpus == 2
    assert Hardening(cpus=8).for_engine(two).cpus == 2
    assert Hardening(cpus=1.5).for_engine(two).cpus == 1.5
    assert Hardening(cpus=1.5).for_engine(two).create_kwargs()["nano_cpus"] == 1_500_000_000
    invoke("run", "--token-stdin", "--cpus", "1.5", str(script))
    assert started[0].hardening.cpus == 1.5
    r = invoke("run", "--cpus", "0", str(script))
    assert r.exit_code == 2 and "'--cpus'" in last_error(r)


# -- batch takes run's options ---------------------------------------------------------------------


@pytest.fixture
def batched(monkeypatch) -> list[list[tuple[str, RunSettings]]]:
    from qsandbox.launcher.run import batch as batch_mod

    seen: list[list[tuple[str, RunSettings]]] = []

    class FakeBatch:
        def __init__(self, runs: list[tuple[str, RunSettings]], source: Any, **_: Any) -> None:
            seen.append(runs)

        def execute(self) -> Any:
            raise Stop("stopped before the engine")

    monkeypatch.setattr(batch_mod, "Batch", FakeBatch)
    return seen


def test_batch_takes_every_run_option_per_script(tmp_path, batched):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "x.csv").write_text("1\n")
    pep723 = project / "fit.py"
    pep723.write_text('# /// script\n# dependencies = ["tabulate"]\n# ///\nprint(1)\n')
    plain = project / "plain.py"
    plain.write_text("print(2)\n")
    nb = project / "nb.ipynb"
    nb.write_text("{}")
    reqs = tmp_path / "reqs.txt"
    reqs.write_text("rich\n")
    r = invoke(
        "batch",
        "--token-stdin",
        "--image",
        "lab:1",
        "--workdir",
        str(project),
        "--include",
        "data/x.csv",
        "--queue-time",
        "2m",
        "--cpus",
        "1",
        "--memory",
        "1.5g",
        "--timeout",
        "10m",
        str(plain),
        str(nb),
        "--requirements",  # options may follow a batch's scripts: they take no arguments
        str(reqs),
    )
    assert (r.exit_code, last_error(r)) == (2, "qsandbox: stopped before the engine")
    (runs,) = batched
    assert [label for label, _ in runs] == [str(plain), str(nb)]
    for _, s in runs:
        assert s.image == "lab:1" and s.workdir == project and s.includes == (Path("data/x.csv"),)
        assert s.queue_time == 120 and s.timeout == 600 and s.hardening.cpus == 1 and s.hardening.memory == 3 << 29
        assert s.needs is not None and [str(q) for q in s.needs.requirements] == ["rich"]
    r = invoke("batch", "--token-stdin", str(pep723), str(plain))
    runs = batched[-1]
    assert [str(q) for q in runs[0][1].needs.requirements] == ["tabulate"]  # its own PEP 723 block
    assert runs[1][1].needs is None


def test_batch_requirements_serve_the_scripts_without_a_block(tmp_path, batched, started):
    block = tmp_path / "fit.py"
    block.write_text('# /// script\n# dependencies = ["tabulate"]\n# ///\n')
    plain = tmp_path / "plain.py"
    plain.write_text("print(1)\n")
    reqs = tmp_path / "r.txt"
    reqs.write_text("rich\n")
    r = invoke("batch", "--token-stdin", "--requirements", str(reqs), str(block), str(plain))
    assert r.exit_code == 2 and last_error(r) == "qsandbox: stopped before the engine"
    assert [[str(q) for q in s.needs.requirements] for _, s in batched[-1]] == [["tabulate"], ["rich"]]
    r = invoke("run", "--token-stdin", "--requirements", str(reqs), str(block))  # one script: ambiguous
    assert r.exit_code == 2 and "already declares dependencies" in last_error(r) and not started


# -- one error boundary --------------------------------------------------------------------------------


def test_every_commands_error_is_one_line_and_its_exit_code(monkeypatch):
    def unavailable(timeout: int = 120) -> Any:
        raise EngineUnavailable("no engine answers at unix:///nowhere: start one")

    monkeypatch.setattr(engine, "connect", unavailable)
    for args in (["sweep"], ["images"], ["platform", "down"], ["build"]):
        r = invoke(*args)
        assert (r.exit_code, r.stderr) == (125, "qsandbox: no engine answers at unix:///nowhere: start one\n"), args


def test_debug_keeps_the_traceback(monkeypatch):
    def unavailable(timeout: int = 120) -> Any:
        raise EngineUnavailable("no engine")

    monkeypatch.setattr(engine, "connect", unavailable)
    r = CliRunner().invoke(main, ["--debug", "sweep"])
    assert isinstance(r.exception, EngineUnavailable)


# -- configuration, variables, locks --------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_lab_then_user_then_variable_then_command_line(tmp_path, script, started):
    write(config.SYSTEM_CONFIG, 'memory = "1g"\ntoken-mode = "short-lived"\n')
    invoke("run", "--token-stdin", str(script))
    assert started[-1].hardening.memory == 1 << 30 and started[-1].token_mode == "short-lived"
    write(tmp_path / "xdg" / "qsandbox" / "config.toml", 'memory = "3g"\n')
    invoke("run", "--token-stdin", str(script))
    assert started[-1].hardening.memory == 3 << 30 and started[-1].token_mode == "short-lived"
    invoke("run", "--token-stdin", str(script), env={"QSANDBOX_MEMORY": "4g"})
    assert started[-1].hardening.memory == 4 << 30
    invoke("run", "--token-stdin", "--memory", "5g", str(script), env={"QSANDBOX_MEMORY": "4g"})
    assert started[-1].hardening.memory == 5 << 30


def test_config_shows_each_value_and_its_source(tmp_path):
    lab = write(config.SYSTEM_CONFIG, 'strict = true\nimage = "lab:1"\n[locked]\nnetwork = "allowlist"\n')
    user = write(tmp_path / "xdg" / "qsandbox" / "config.toml", "pids = 256\n")
    r = invoke("config", env={"QSANDBOX_TIMEOUT": "10m"})
    assert r.exit_code == 0, r.stderr
    lines = {line.split(" = ")[0].strip("# "): line for line in r.stdout.splitlines()}
    assert lines["strict"].endswith(f"# {lab}") and lines["strict"].startswith("strict = true")
    assert lines["image"].startswith('image = "lab:1"')
    assert lines["pids"].startswith("pids = 256") and lines["pids"].endswith(f"# {user}")
    assert lines["timeout"].startswith('timeout = "10m"') and lines["timeout"].endswith("# env QSANDBOX_TIMEOUT")
    assert lines["network"].endswith(f"# locked by {lab}")
    assert lines["memory"].startswith('memory = "2g"') and lines["memory"].endswith("# default")
    assert not set(lines) & {"token-stdin", "token-file", "token-env", "token-command"}
    data = json.loads(invoke("config", "--json").stdout)
    assert data["strict"] == {"value": True, "source": str(lab)}


def test_a_locked_option_cannot_be_loosened(script, started):
    lab = write(config.SYSTEM_CONFIG, '[locked]\nstrict = true\nnetwork = "allowlist"\n')
    invoke("run", "--token-stdin", str(script))
    assert started[-1].strict and started[-1].egress == "allowlist"
    r = invoke("run", "--token-stdin", "--network", "open", str(script))
    assert (r.exit_code, last_error(r)) == (
        2,
        f"qsandbox: --network from the command line is refused: the lab's configuration {lab} locks "
        'network = "allowlist"',
    )
    r = invoke("batch", "--token-stdin", str(script), env={"QSANDBOX_STRICT": "0"})
    assert r.exit_code == 2 and "--strict from a QSANDBOX_* variable is refused" in last_error(r)
    invoke("run", "--token-stdin", "--network", "allowlist", "--strict", str(script))  # the same value: fine
    assert started[-1].strict


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('token-file = "/k"\n', "token-file: the API key and its source are never configuration"),
        ('token = "abc"\n', "token: the API key and its source are never configuration"),
        ('memroy = "1g"\n', "unknown option memroy (did you mean memory?)"),
        ('memory = "lots"\n', 'memory = "lots": use a number with an optional unit'),
        ("memory = \n", "is not valid TOML"),
    ],
)
def test_a_bad_configuration_is_named(script, text, message):
    path = write(config.SYSTEM_CONFIG, text)
    r = invoke("run", "--token-stdin", str(script))
    assert r.exit_code == 2
    assert last_error(r).startswith(f"qsandbox: configuration {path}") and message in last_error(r), r.stderr


def test_a_users_file_cannot_lock(tmp_path, script):
    write(tmp_path / "xdg" / "qsandbox" / "config.toml", "[locked]\nstrict = false\n")
    r = invoke("run", "--token-stdin", str(script))
    assert r.exit_code == 2 and "[locked] belongs in the lab's" in last_error(r)


def test_no_variable_chooses_a_key_source(script, started):
    r = invoke("run", str(script), input=None, env={"QSANDBOX_TOKEN_ENV": "X", "QSANDBOX_TOKEN_FILE": "/k"})
    assert r.exit_code == 2 and "no API key source" in last_error(r)


# -- the key source's first line --------------------------------------------------------------------


def test_token_command_takes_the_first_line(tmp_path):
    from qsandbox.launcher.cli.options import key_source

    entry = tmp_path / "entry"
    entry.write_text(KEY + "\nuser: alice\nurl: https://cloud.ibm.com\n")
    o = {"token_stdin": False, "token_file": None, "token_env": None, "token_command": f"cat {entry}"}
    assert key_source(o).read().reveal() == KEY
    entry.write_text("\n" + KEY + "\n")
    with pytest.raises(UsageError, match="is empty"):
        key_source(o).read()


# -- machine-readable outputs ----------------------------------------------------------------------


def test_doctor_json(monkeypatch):
    from qsandbox.launcher.checks import doctor

    def checks(say: Any) -> bool:
        say(doctor.Check("engine", True, "Docker 27"))
        say(doctor.Check("host swap", True, "not checked: the launcher runs on darwin", checked=False))
        say(doctor.Check("image", False, "image qsandbox:x missing: run `qsandbox build`"))
        return False

    monkeypatch.setattr(doctor, "checks", checks)
    r = invoke("doctor", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout) == {
        "ok": False,
        "checks": [
            {"name": "engine", "status": "ok", "detail": "Docker 27"},
            {"name": "host swap", "status": "not checked", "detail": "not checked: the launcher runs on darwin"},
            {"name": "image", "status": "fail", "detail": "image qsandbox:x missing: run `qsandbox build`"},
        ],
    }


def test_images_json_and_quiet(monkeypatch):
    from qsandbox.launcher.engine import deps

    rows = [
        deps.Listed("qsandbox:0.1.0", "base", 900_000_000, "2026-01-01 10:00:00", None, ""),
        deps.Listed("qsandbox-deps:0.1.0-ab", "derived", 950_000_000, "2026-01-02 10:00:00", 1.7e9, "rich"),
    ]
    monkeypatch.setattr(engine, "connect", lambda timeout=120: object())
    monkeypatch.setattr(deps, "listing", lambda _client: rows)
    r = invoke("images", "-q")
    assert r.stdout.splitlines() == ["qsandbox:0.1.0", "qsandbox-deps:0.1.0-ab"]
    r = invoke("images", "--format", "json")
    data = json.loads(r.stdout)
    assert [d["tag"] for d in data] == ["qsandbox:0.1.0", "qsandbox-deps:0.1.0-ab"]
    assert data[1] == {
        "tag": "qsandbox-deps:0.1.0-ab",
        "kind": "derived",
        "size": 950_000_000,
        "created": "2026-01-02 10:00:00",
        "last_used": 1.7e9,
        "requirements": "rich",
    }
