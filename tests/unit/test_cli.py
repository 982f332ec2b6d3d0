from __future__ import annotations

from click.testing import CliRunner

from qsandbox import __version__
from qsandbox.launcher.cli import main


def test_version_and_help():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for cmd in ("build", "doctor", "run", "sweep"):
        assert cmd in r.output


def test_run_help_lists_key_sources_in_order():
    r = CliRunner().invoke(main, ["run", "--help"])
    assert r.exit_code == 0
    order = [r.output.index(s) for s in ("--token-stdin", "--token-file", "--token-env", "--token-command", "prompt")]
    assert order == sorted(order)
    assert "--token " not in r.output  # never a key as a command-line value
