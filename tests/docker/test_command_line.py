"""The command line against the real engine (issue 25): a script's own options reach it, `batch`
takes a PEP 723 script, a --requirements script and a notebook in one go, and `sweep` spares a live
run. tests/unit/test_cli.py covers the combinations without an engine."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time

import pytest
from helpers import ROOT, error_lines, qsandbox

from qsandbox.launcher.checks.audit import release
from qsandbox.launcher.core.settings import LABEL

SCRIPTS = ROOT / "tests" / "scripts"
DEPS = SCRIPTS / "deps"

ARGV = "import json, sys\nprint('argv:', json.dumps(sys.argv[1:]))\n"


def test_a_scripts_own_options_reach_it(image, canary, tmp_path):
    script = tmp_path / "args.py"
    script.write_text(ARGV)
    given = ["--output", "x", "--timeout", "3", "--memory", "lots", "-h", "--", "--token-stdin"]
    done = qsandbox("run", "--token-stdin", "--timeout", "2m", str(script), *given, input=canary + "\n")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"argv: {json.dumps(given)}" in done.stdout.splitlines()
    assert not (tmp_path / "x").exists()  # --output x was the script's, not qsandbox's
    # `--` before the script: the options before it are qsandbox's, everything after the script's
    done = qsandbox("run", "--token-stdin", "--", str(script), "--output", "y", input=canary + "\n")
    assert done.returncode == 0 and 'argv: ["--output", "y"]' in done.stdout.splitlines(), done.stderr[-2000:]


def _blocks(stdout: str) -> dict[str, str]:
    """A batch's output, script label -> its lines without the label."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        label, sep, text = line.partition(" | ")
        if sep:
            out.setdefault(label.strip(), []).append(text)
    return {k: "\n".join(v) for k, v in out.items()}


def test_batch_runs_a_pep723_script_a_requirements_script_and_a_notebook(image, tmp_path):
    nb = tmp_path / "nb.ipynb"
    code = "import tabulate\nprint('notebook', tabulate.__name__, 6 * 7)"
    cell: dict[str, object] = {
        "cell_type": "code",
        "metadata": {},
        "source": code,
        "outputs": [],
        "execution_count": None,
    }
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb.write_text(json.dumps({"cells": [cell], "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))
    pep723, plain = str(DEPS / "table_pep723.py"), str(DEPS / "table_plain.py")
    done = qsandbox(
        "batch",
        "--platform",
        "local",
        "--requirements",  # for the scripts without a block: table_plain.py and the notebook
        str(DEPS / "requirements.txt"),
        pep723,
        plain,
        str(nb),
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    blocks = _blocks(done.stdout)
    assert re.search(r"state\s+count\n-+\s+-+\n\s+00\s+503", blocks[pep723]), blocks[pep723]  # its own block
    assert re.search(r"name\s+n\n-+\s+-+\nx\s+1", blocks[plain]), blocks[plain]
    assert "notebook tabulate 42" in blocks[str(nb)], blocks[str(nb)]
    for label in (pep723, plain, str(nb)):
        assert f"===== {label}: passed =====" in done.stdout


def _live_container(client, nonce: str, wait: float = 120) -> str:
    end = time.monotonic() + wait
    while time.monotonic() < end:
        for c in client.containers.list(filters={"label": LABEL}):
            if nonce in c.attrs["Args"]:
                return str(c.name)
        time.sleep(0.2)
    raise AssertionError("the run's sandbox never started")


def test_sweep_spares_a_live_run(image, canary, docker_client, popen):
    nonce = secrets.token_hex(8)
    argv = [sys.executable, "-m", "qsandbox", "run", "--token-stdin", str(SCRIPTS / "hold_then_exit.py"), "7", nonce]
    proc = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    proc.stdin.write(canary + "\n")
    proc.stdin.close()
    proc.stdin = None  # closed: communicate() must not flush it
    name = _live_container(docker_client, nonce)
    # Positive control: the sweep sees the live sandbox (--all would take it) ...
    listed = qsandbox("sweep", "--all", "--dry-run")
    assert listed.returncode == 0 and f"would remove container {name} " in listed.stdout, listed.stdout
    # ... and by default leaves it alone, and refuses --all without a terminal or --yes.
    swept = qsandbox("sweep")
    assert swept.returncode == 0, swept.stderr
    assert name not in swept.stdout
    refused = qsandbox("sweep", "--all")
    assert refused.returncode == 2 and error_lines(refused.stderr)[-1].startswith("qsandbox: --all would remove")
    assert name in [c.name for c in docker_client.containers.list(filters={"label": LABEL})]
    release(nonce)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 7, err[-2000:]  # the script ran to its own end
    assert "container and secret destroyed (engine confirms)" in err


def _lab_image(client, base: str, tag: str, label: str | None) -> str:
    """An image FROM `base` as a lab builds one; `label`: the freshness label it claims instead."""
    import io

    dockerfile = f"FROM {base}\n" + (f'LABEL qsandbox.context="{label}"\n' if label else "")
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


def test_an_image_of_other_sources_is_refused(image, canary, docker_client, tmp_path):
    """A stale image (its build context's digest is not this installation's) is refused before
    anything starts, exit 2, with `qsandbox build` as the remedy; the same image FROM the fresh one is
    the control. (The base qsandbox:VERSION itself is not made stale here: the engine is shared.)"""
    from qsandbox.launcher.engine import image as image_mod

    script = tmp_path / "args.py"
    script.write_text(ARGV)
    stale = _lab_image(docker_client, image, f"qsandbox-test-stale:{secrets.token_hex(4)}", "0" * 64)
    fresh = _lab_image(docker_client, image, f"qsandbox-test-fresh:{secrets.token_hex(4)}", None)
    try:
        with pytest.raises(image_mod.ImageStale):
            image_mod.check(docker_client, stale)
        image_mod.check(docker_client, fresh)
        done = qsandbox("run", "--token-stdin", "--image", stale, str(script), "a", input=canary + "\n")
        assert done.returncode == 2
        assert error_lines(done.stderr) == [
            f"qsandbox: --image {stale} is built FROM an image of other sources than this qsandbox's "
            f"({image_mod.PACKAGE}): run `qsandbox build`, then rebuild it FROM {image}"
        ]
        assert not docker_client.containers.list(all=True, filters={"ancestor": stale})
        done = qsandbox("run", "--token-stdin", "--image", fresh, str(script), "a", input=canary + "\n")
        assert done.returncode == 0 and 'argv: ["a"]' in done.stdout.splitlines(), done.stderr[-2000:]
    finally:
        for tag in (stale, fresh):
            docker_client.images.remove(tag, force=True)
