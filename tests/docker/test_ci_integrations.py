"""The GitHub Action, the example workflow and the GitLab template: valid against the published
schemas (check-jsonschema's vendored copies, offline), and every shell step they contain run here
with bash against the real engine, with the inputs and variables substituted as the CI would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import ROOT
from junitparser import JUnitXml

from qsandbox.launcher.report import SCHEMA_FILE

CHECK = Path(sys.executable).with_name("check-jsonschema")
ACTION = ROOT / "action.yml"
WORKFLOW = ROOT / ".github" / "workflows" / "example.yml"
GITLAB = ROOT / "ci" / "gitlab-qsandbox.yml"
HELLO = 'import sys\nprint("hello from", sys.argv[0])\n'


def _check(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK), "--builtin-schema", schema, str(path)], capture_output=True, text=True)


@pytest.mark.parametrize(("schema", "path"), [("vendor.github-actions", ACTION), ("vendor.github-workflows", WORKFLOW)])
def test_github_files_valid_against_the_published_schema(schema, path, tmp_path):
    done = _check(schema, path)
    assert done.returncode == 0, done.stdout + done.stderr
    # Negative control: the same check fails a copy with a required key taken out.
    doc = yaml.safe_load(path.read_text())
    doc.pop({"vendor.github-actions": "runs", "vendor.github-workflows": "jobs"}[schema])
    broken = tmp_path / path.name
    broken.write_text(yaml.safe_dump(doc))
    assert _check(schema, broken).returncode == 1


def test_gitlab_template_valid_against_the_published_schema(tmp_path):
    """The schema lets hidden jobs (.name) hold anything, so the jobs a user writes with `extends:`
    are checked too, resolved as GitLab merges them."""
    assert _check("vendor.gitlab-ci", GITLAB).returncode == 0
    doc = yaml.safe_load(GITLAB.read_text())
    for hidden in (".qsandbox-socket", ".qsandbox-dind"):
        job = {**doc[".qsandbox"], **doc[hidden]}
        job["variables"] = {**doc[".qsandbox"]["variables"], **doc[hidden]["variables"]}
        del job["extends"]
        user = tmp_path / "user.yml"
        user.write_text(yaml.safe_dump({"qiskit-scripts": job}))
        done = _check("vendor.gitlab-ci", user)
        assert done.returncode == 0, done.stdout + done.stderr
        job["artifacts"] = {**job["artifacts"], "when": "sometimes"}  # negative control: not a GitLab value
        user.write_text(yaml.safe_dump({"qiskit-scripts": job}))
        assert _check("vendor.gitlab-ci", user).returncode == 1


# -- GitHub: the composite action's steps -----------------------------------------------------


def _expand(text: str, context: dict[str, str]) -> str:
    """`${{ a.b.c }}` -> context["a.b.c"], as the runner substitutes before the shell sees it."""

    def one(m: re.Match[str]) -> str:
        return context[m.group(1)]

    return re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", one, text)


def _run_action(workspace: Path, runner_temp: Path, inputs: dict[str, str], env: dict[str, str]) -> tuple[int, str]:
    """Every step of action.yml, in order; `uses:` steps (actions/cache) are the runner's, skipped."""
    action = yaml.safe_load(ACTION.read_text())
    context = {f"inputs.{k}": str(v.get("default", "")) for k, v in action["inputs"].items()}
    context.update({f"inputs.{k}": v for k, v in inputs.items()})
    context.update({"github.action_path": str(ROOT), "runner.temp": str(runner_temp), "runner.os": "Linux"})
    path_file = runner_temp / "github_path"
    path_file.touch()
    log = []
    for step in action["runs"]["steps"]:
        if "uses" in step:
            assert step["uses"].startswith("actions/cache@")
            log.append(f"skipped {step['uses']} (restores {_expand(step['with']['path'], context)})")
            continue
        assert step["shell"] == "bash"
        output = runner_temp / f"output-{step['id']}"
        output.write_text("")
        extra_path = [p for p in path_file.read_text().splitlines() if p]
        step_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("QISKIT_IBM", "VIRTUAL_ENV"))},
            "PATH": os.pathsep.join([*extra_path, "/usr/local/bin", "/usr/bin", "/bin"]),
            "RUNNER_TEMP": str(runner_temp),
            "GITHUB_PATH": str(path_file),
            "GITHUB_OUTPUT": str(output),
            **env,
            **{k: _expand(str(v), context) for k, v in step.get("env", {}).items()},
        }
        script = _expand(step["run"], context)
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        log.append(f"step {step['id']}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        if done.returncode != 0:
            return done.returncode, "\n".join(log)
        for line in output.read_text().splitlines():
            name, _, value = line.partition("=")
            context[f"steps.{step['id']}.outputs.{name}"] = value
    return 0, "\n".join(log)


@pytest.mark.docker
def test_github_action_steps_run_here(image, canary, tmp_path):
    workspace, runner_temp = tmp_path / "ws", tmp_path / "runner"
    (workspace / "sub").mkdir(parents=True)
    runner_temp.mkdir()
    (workspace / "a.py").write_text(HELLO)
    (workspace / "sub" / "b.py").write_text(HELLO)
    inputs = {"scripts": "a.py\nsub/b.py", "platform": "local", "api-key": canary, "options": "--timeout 300"}
    code, log = _run_action(workspace, runner_temp, inputs, {})
    assert code == 0, log
    doc = json.loads((workspace / "qsandbox-report.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))
    assert [(r["script"], r["passed"]) for r in doc["runs"]] == [("a.py", True), ("sub/b.py", True)]
    assert next(iter(JUnitXml.fromfile(str(workspace / "qsandbox-junit.xml")))).tests == 2
    tarball = next(runner_temp.glob("qsandbox-image-*.tar"))  # what actions/cache would keep
    assert tarball.stat().st_size > 100 << 20
    assert canary not in log
    # The next workflow run: the key from an env var named by api-key-env, the image from the cache.
    code, log = _run_action(
        workspace, runner_temp, {**inputs, "api-key": "", "api-key-env": "MY_KEY"}, {"MY_KEY": canary}
    )
    assert code == 0, log
    assert "Loaded image: qsandbox:" in log
    # No key at all for the real platform: the step fails at once and says what to set.
    code, log = _run_action(workspace, runner_temp, {**inputs, "api-key": "", "platform": "ibm"}, {})
    assert code == 2, log
    assert "::error::qsandbox: no API key: set the api-key input from a secret" in log


# -- GitLab: the template's job ----------------------------------------------------------------


def _gitlab_job(job: str) -> tuple[dict[str, str], list[str], list[str]]:
    """Variables, before_script and script of a job, following `extends:` as GitLab merges them."""
    doc = yaml.safe_load(GITLAB.read_text())
    chain = []
    name: str | None = job
    while name:
        chain.append(doc[name])
        name = doc[name].get("extends")
    variables: dict[str, str] = {}
    before: list[str] = []
    script: list[str] = []
    for part in reversed(chain):
        variables.update({k: str(v) for k, v in part.get("variables", {}).items()})
        before = part.get("before_script", before)
        script = part.get("script", script)
    return variables, before, script


def _run_lines(lines: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", "\n".join(lines)], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.docker
def test_gitlab_template_steps_run_here(image, canary, tmp_path):
    """The socket-mounted executor's job here (the engine's socket is ours); dind differs only in
    DOCKER_HOST and TLS, which the runner's service provides."""
    variables, before, script = _gitlab_job(".qsandbox-socket")
    assert variables["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    dind, _, _ = _gitlab_job(".qsandbox-dind")
    assert dind["DOCKER_HOST"] == "tcp://docker:2376" and dind["DOCKER_TLS_VERIFY"] == "1"
    (tmp_path / "a.py").write_text(HELLO)
    (tmp_path / "b.py").write_text(HELLO)
    key_file = tmp_path / "key"  # a File-type variable: GitLab writes the value to a temp file
    key_file.write_text(canary)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QISKIT_IBM", "VIRTUAL_ENV"))}
    env = {
        **base,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        **variables,
        "QSANDBOX_SCRIPTS": "a.py b.py",
        "QSANDBOX_PLATFORM": "local",
        "QSANDBOX_INSTALL": str(ROOT),
        "QSANDBOX_OPTIONS": "--timeout 300",
        "QSANDBOX_API_KEY_FILE": str(key_file),
    }
    done = _run_lines([*before, *script], tmp_path, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((tmp_path / "qsandbox-report.json").read_text())
    assert [r["passed"] for r in doc["runs"]] == [True, True]
    assert next(iter(JUnitXml.fromfile(str(tmp_path / "qsandbox-junit.xml")))).tests == 2
    assert list((tmp_path / ".qsandbox-cache").glob("qsandbox-image-*.tar"))  # what the cache keeps
    # A masked variable instead; the environment the job's lines leave behind (PATH) kept.
    venv_bin = str(tmp_path / ".qsandbox-cache" / "venv" / "bin")
    env = {**env, "PATH": venv_bin + ":" + env["PATH"], "QSANDBOX_API_KEY": canary}
    del env["QSANDBOX_API_KEY_FILE"]
    done = _run_lines(script, tmp_path, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert canary not in done.stdout + done.stderr
    # A protected variable absent on this branch, for the real platform: fails at once, says why.
    del env["QSANDBOX_API_KEY"]
    done = _run_lines(script, tmp_path, {**env, "QSANDBOX_PLATFORM": "ibm"})
    assert done.returncode == 2 and "qsandbox: no API key: set the masked variable QSANDBOX_API_KEY" in done.stderr
    shutil.rmtree(tmp_path / ".qsandbox-cache")
