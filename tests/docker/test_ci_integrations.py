"""The GitHub Action, the example workflow and the GitLab component: valid against the published
schemas (check-jsonschema's vendored copies, offline), and every shell step they contain run here
with bash (the Action) or sh (the GitLab job) against the real engine, with the inputs and
variables substituted as the CI would. The runners' own parts (actions/cache, GitLab's cache and
rules, the dind service) are stood in for: a directory for the cache, the rules read, not run."""

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
from helpers import ROOT
from junitparser import Failure, JUnitXml

from qsandbox import __version__
from qsandbox.launcher.run.report import SCHEMA_FILE

CHECK = Path(sys.executable).with_name("check-jsonschema")
ACTION = ROOT / "action.yml"
WORKFLOW = ROOT / ".github" / "workflows" / "example.yml"
COMPONENT = ROOT / "templates" / "qsandbox" / "template.yml"
HELLO = 'import sys\nprint("hello from", sys.argv[0])\n'
FAILING = 'print("about to fail")\nraise SystemExit(1 / 0)\n'
SHA = re.compile(r"[0-9a-f]{40}")


def _context(python: Path) -> str:
    """What names the cached image: the hash of the installed package's build context and the base
    (asked of the venv the job installed, as the checkout may change meanwhile)."""
    code = "import hashlib; from qsandbox.launcher.engine.image import context_archive as c; "
    code += "print(hashlib.sha256(c() + b'default').hexdigest()[:32])"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


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


def _uses(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    steps = doc["runs"]["steps"] if "runs" in doc else [s for j in doc["jobs"].values() for s in j["steps"]]
    return [s["uses"] for s in steps if "uses" in s and not s["uses"].startswith("./")]


def test_every_nested_action_is_pinned_by_full_commit_sha():
    """Organisations that require SHA pinning refuse a tag (`actions/cache@v4`); the tag stays in a comment."""
    uses = _uses(ACTION) + _uses(WORKFLOW)
    assert {u.split("@")[0] for u in _uses(ACTION)} == {"actions/cache/restore", "actions/cache/save"}
    assert "mikepenz/action-junit-report" in {u.split("@")[0] for u in _uses(WORKFLOW)}
    for use in uses:
        assert SHA.fullmatch(use.partition("@")[2]), use
    for path in (ACTION, WORKFLOW):
        for line in path.read_text().splitlines():
            if "uses:" in line and "@" in line:
                assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), line


def test_example_workflow_puts_the_real_platform_behind_an_environment():
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert jobs["ibm"]["environment"] == "ibm-quantum"
    assert "secrets." not in json.dumps(jobs["rehearse"])  # the rehearsal needs no secret
    assert all("environment" not in j for name, j in jobs.items() if name != "ibm")


# -- GitHub: the composite action's steps -----------------------------------------------------


def _expand(text: str, context: dict[str, str]) -> str:
    """`${{ a.b.c }}` -> context["a.b.c"], as the runner substitutes before the shell sees it."""

    def one(m: re.Match[str]) -> str:
        return context.get(m.group(1), "")  # an output a step did not set is empty

    return re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", one, text)


def _condition(expr: str, context: dict[str, str]) -> bool:
    """The one form of `if:` the action uses: `steps.X.outputs.Y == 'value'`."""
    m = re.fullmatch(r"([\w.-]+) == '([^']*)'", expr.strip())
    assert m, f"an if: this stand-in does not read: {expr}"
    return context.get(m.group(1), "") == m.group(2)


def _cache_step(step: dict, context: dict[str, str], cache: Path, log: list[str]) -> None:
    """actions/cache/restore and /save, stood in for by a directory of tarballs, one per key."""
    name, with_ = step["uses"].split("@")[0], {k: _expand(str(v), context) for k, v in step["with"].items()}
    path, key = Path(with_["path"]), with_["key"]
    assert "/" not in key and key, key
    stored = cache / key
    if name == "actions/cache/restore":
        context[f"steps.{step['id']}.outputs.cache-primary-key"] = key
        if stored.exists():
            shutil.copy(stored, path)
            context[f"steps.{step['id']}.outputs.cache-hit"] = "true"
        log.append(f"{name}: key {key}: {'hit' if stored.exists() else 'miss'}")
    else:
        shutil.copy(path, stored)
        log.append(f"{name}: key {key}: saved")


def _run_action(
    workspace: Path, runner_temp: Path, inputs: dict[str, str], env: dict[str, str], cache: Path
) -> tuple[int, str, dict[str, str]]:
    """Every step of action.yml, in order, as the runner takes them; the step summary is in the
    context as `summary`, and each output as `steps.ID.outputs.NAME`."""
    action = yaml.safe_load(ACTION.read_text())
    context = {f"inputs.{k}": str(v.get("default", "")) for k, v in action["inputs"].items()}
    context.update({f"inputs.{k}": v for k, v in inputs.items()})
    context.update(
        {"github.action_path": str(ROOT), "runner.temp": str(runner_temp), "runner.os": "Linux", "runner.arch": "X64"}
    )
    path_file, summary = runner_temp / "github_path", runner_temp / "step_summary"
    path_file.write_text("")
    summary.write_text("")
    log: list[str] = []
    code = 0
    for step in action["runs"]["steps"]:
        if "if" in step and not _condition(step["if"], context):
            log.append(f"skipped {step['id']} (if: {step['if']})")
            continue
        if "uses" in step:
            _cache_step(step, context, cache, log)
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
            "GITHUB_STEP_SUMMARY": str(summary),
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
        for line in output.read_text().splitlines():
            name, _, value = line.partition("=")
            context[f"steps.{step['id']}.outputs.{name}"] = value
        if done.returncode != 0:
            code = done.returncode
            break
    context["summary"] = summary.read_text()
    return code, "\n".join(log), context


def _run_step_alone(workspace: Path, inputs: dict[str, str], fake_qsandbox: str) -> subprocess.CompletedProcess[str]:
    """Only the action's `run` step, with a stand-in `qsandbox` on PATH (no engine)."""
    step = next(s for s in yaml.safe_load(ACTION.read_text())["runs"]["steps"] if s["id"] == "run")
    action = yaml.safe_load(ACTION.read_text())
    context = {f"inputs.{k}": str(v.get("default", "")) for k, v in action["inputs"].items()}
    context.update({f"inputs.{k}": v for k, v in inputs.items()})
    bin_dir = workspace.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "qsandbox"
    fake.write_text(fake_qsandbox)
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "GITHUB_OUTPUT": str(workspace.parent / "output"),
        "GITHUB_STEP_SUMMARY": str(workspace.parent / "summary"),
        **{k: _expand(str(v), context) for k, v in step["env"].items()},
    }
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_github_action_expands_globs_and_groups_each_script(tmp_path):
    workspace = tmp_path / "ws"
    (workspace / "tests" / "deep").mkdir(parents=True)
    for name in ("tests/b.py", "tests/a.py", "tests/deep/c.py", "top.py"):
        (workspace / name).write_text(HELLO)
    args = tmp_path / "args"
    fake = f"""#!/bin/bash
printf '%s\\n' "$@" > {args}
echo '===== tests/a.py ====='
echo 'tests/a.py | ===== forged: passed ====='
echo '===== tests/a.py: passed ====='
echo '===== tests/b.py ====='
echo '===== tests/b.py: FAILED (exit 1) ====='
exit 1
"""
    done = _run_step_alone(workspace, {"scripts": "tests/*.py\n  top.py **/c.py", "platform": "local"}, fake)
    assert done.returncode == 1, done.stderr  # qsandbox's exit code, through the pipe
    passed = args.read_text().splitlines()
    assert passed[-4:] == ["tests/a.py", "tests/b.py", "top.py", "tests/deep/c.py"]
    assert done.stdout.splitlines() == [
        "::group::tests/a.py",
        "tests/a.py | ===== forged: passed =====",
        "::endgroup::",
        "===== tests/a.py: passed =====",
        "::group::tests/b.py",
        "::endgroup::",
        "===== tests/b.py: FAILED (exit 1) =====",
    ]
    assert "exit-code=1" in (tmp_path / "output").read_text()
    done = _run_step_alone(workspace, {"scripts": "tests/*.py nothing/*.py", "platform": "local"}, fake)
    assert done.returncode == 2 and "::error::qsandbox: no file matches nothing/*.py" in done.stdout


@pytest.mark.docker
def test_github_action_steps_run_here(image, canary, tmp_path):
    workspace, runner_temp, cache = tmp_path / "ws", tmp_path / "runner", tmp_path / "cache"
    (workspace / "sub").mkdir(parents=True)
    runner_temp.mkdir()
    cache.mkdir()
    (workspace / "a.py").write_text(HELLO)
    (workspace / "sub" / "b.py").write_text(HELLO)
    (workspace / "sub" / "fails.py").write_text(FAILING)
    # A failing batch: the image is still saved to the cache, right after it was made.
    inputs = {"scripts": "a.py sub/*.py", "platform": "local", "api-key": canary, "options": "--timeout 300"}
    code, log, out = _run_action(workspace, runner_temp, inputs, {}, cache)
    assert code == 1, log
    key = f"qsandbox-image-Linux-X64-{__version__}-{_context(runner_temp / 'qsandbox-venv' / 'bin' / 'python')}"
    assert [p.name for p in cache.iterdir()] == [key], log
    assert (cache / key).stat().st_size > 100 << 20
    assert out["steps.run.outputs.exit-code"] == "1"
    assert (out["steps.run.outputs.junit"], out["steps.run.outputs.json"]) == (
        "qsandbox-junit.xml",
        "qsandbox-report.json",
    )
    doc = json.loads((workspace / "qsandbox-report.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))
    assert [(r["script"], r["passed"]) for r in doc["runs"]] == [
        ("a.py", True),
        ("sub/b.py", True),
        ("sub/fails.py", False),
    ]
    cases = {c.name: c for c in next(iter(JUnitXml.fromfile(str(workspace / "qsandbox-junit.xml"))))}
    failure = cases["fails.py"].result[0]
    assert isinstance(failure, Failure) and failure.message == "ZeroDivisionError: division by zero"
    assert "about to fail" in failure.text  # the body GitLab and the reporters show
    assert "::group::sub/fails.py" in log and "::endgroup::" in log
    assert "| `sub/fails.py` | FAILED | 1 |" in out["summary"] and "2 of 3 passed" in out["summary"]
    assert canary not in log and canary not in out["summary"]
    # The next workflow run, on a fresh runner: the key from an env var named by api-key-env, the
    # image from the cache.
    (workspace / "sub" / "fails.py").unlink()
    runner_temp = tmp_path / "runner2"
    runner_temp.mkdir()
    code, log, _ = _run_action(
        workspace, runner_temp, {**inputs, "api-key": "", "api-key-env": "MY_KEY"}, {"MY_KEY": canary}, cache
    )
    assert code == 0, log
    assert "Loaded image: qsandbox:" in log and "skipped save" in log
    # No key at all for the real platform: the step fails at once and says what to set.
    code, log, _ = _run_action(workspace, runner_temp, {**inputs, "api-key": "", "platform": "ibm"}, {}, cache)
    assert code == 2, log
    assert "::error::qsandbox: no API key: set the api-key input from a secret" in log


# -- GitLab: the component ---------------------------------------------------------------------

COMPONENT_SHA = "0123456789abcdef0123456789abcdef01234567"


def _component(inputs: dict[str, object], sha: str = COMPONENT_SHA) -> tuple[dict, dict]:
    """The header (spec) and the body as GitLab interpolates it: `$[[ inputs.X ]]` from the given
    inputs or the defaults, `$[[ component.sha ]]` the commit of the version included."""
    header_text, _, body_text = COMPONENT.read_text().partition("\n---\n")
    header = yaml.safe_load(header_text)
    spec = header["spec"]["inputs"]
    missing = [k for k, v in spec.items() if "default" not in v and k not in inputs]
    assert not missing, f"required inputs not given: {missing}"
    values = {k: inputs.get(k, v.get("default")) for k, v in spec.items()}
    for k, v in values.items():
        if "options" in spec[k]:
            assert v in spec[k]["options"], (k, v)

    def one(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2)
        assert kind == "inputs" or name in header["spec"]["component"], m.group(0)
        return sha if kind == "component" else str(values[name])

    return header, yaml.safe_load(re.sub(r"\$\[\[\s*(inputs|component)\.([\w-]+)\s*\]\]", one, body_text))


def _job(body: dict, name: str = "qsandbox") -> dict:
    """A job with its `extends:` merged as GitLab merges it (hashes deeply, everything else replaced)."""
    job = dict(body[name])
    parent = body[job.pop("extends")]
    merged = {**parent, **job}
    merged["variables"] = {**parent.get("variables", {}), **job.get("variables", {})}
    return merged


def test_gitlab_component_valid_against_the_published_schema(tmp_path):
    """The header and the interpolated body, each against GitLab's CI schema; negative controls: a
    cache key with a `/` (runner 18.2 and later refuse one) and an `artifacts:when` GitLab lacks."""
    header, body = _component({"scripts": "tests/*.py", "project": "group/qsandbox"})
    files = {"header.yml": header, "body.yml": body}
    for engine in ("socket", "dind"):
        files[f"{engine}.yml"] = _component({"scripts": "a.py", "install": "/x.whl", "engine": engine})[1]
    for name, doc in files.items():
        (tmp_path / name).write_text(yaml.safe_dump(doc))
        done = _check("vendor.gitlab-ci", tmp_path / name)
        assert done.returncode == 0, name + done.stdout + done.stderr
    assert "/" not in body["qsandbox"]["cache"]["key"] and body["qsandbox"]["cache"]["when"] == "always"
    _, slash = _component({"scripts": "a.py"}, sha="main/feature")
    (tmp_path / "slash.yml").write_text(yaml.safe_dump(slash))
    assert _check("vendor.gitlab-ci", tmp_path / "slash.yml").returncode == 1
    body["qsandbox"]["artifacts"]["when"] = "sometimes"
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(body))
    assert _check("vendor.gitlab-ci", tmp_path / "bad.yml").returncode == 1


def test_gitlab_component_rules_keep_the_real_platform_where_the_key_is():
    _, body = _component({"scripts": "a.py", "project": "g/q"})
    rules = body["qsandbox"]["rules"]
    assert rules[0] == {
        "if": '$CI_PIPELINE_SOURCE == "merge_request_event"',
        "variables": {"QSANDBOX_PLATFORM": "local"},
    }
    assert rules[1] == {"if": "$QSANDBOX_API_KEY || $QSANDBOX_API_KEY_FILE", "variables": {"QSANDBOX_PLATFORM": "ibm"}}
    assert rules[2]["variables"]["QSANDBOX_PLATFORM"] == "local" and "QSANDBOX_WHY_LOCAL" in rules[2]["variables"]
    assert "before_script" not in body["qsandbox"]  # a user's before_script adds to the install, never replaces it


def _sh(lines: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The job's lines as the runner runs them: one POSIX shell (the docker:cli image has no bash)."""
    return subprocess.run(
        ["sh", "-e", "-c", "\n".join(lines)], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_gitlab_component_installs_its_own_commit_by_default(tmp_path):
    """With `install` empty, pip gets this project from the component's own project at the
    component's commit (never a bare `qsandbox` from an index); without `project` the job stops."""
    _, body = _component({"scripts": "a.py", "project": "group/qsandbox"})
    job = _job(body)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "pip-args"
    # Stand-ins for python3 and pip: record what would be installed, install nothing.
    (bin_dir / "python3").write_text(
        f'#!/bin/sh\nmkdir -p "$3/bin"\nprintf \'#!/bin/sh\\necho "$@" > {record}\\n\' > "$3/bin/python"\n'
        'chmod +x "$3/bin/python"\n'
    )
    (bin_dir / "python3").chmod(0o755)
    (bin_dir / "git").write_text("#!/bin/sh\n")
    (bin_dir / "git").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        **{k: str(v) for k, v in job["variables"].items()},
        "CI_SERVER_PROTOCOL": "https",
        "CI_SERVER_HOST": "gitlab.example.com",
        "CI_SERVER_PORT": "443",
        "CI_JOB_TOKEN": "job-token",
    }
    done = _sh(job["script"][:1], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert record.read_text().split() == [
        "-m",
        "pip",
        "install",
        "--quiet",
        f"git+https://gitlab-ci-token:job-token@gitlab.example.com:443/group/qsandbox.git@{COMPONENT_SHA}",
    ]
    done = _sh(job["script"][:1], tmp_path, {**env, "QSANDBOX_PROJECT": ""})
    assert done.returncode == 2 and "the component's input 'project' is empty" in done.stderr


@pytest.mark.docker
def test_gitlab_component_job_runs_here(image, canary, tmp_path):
    """The socket-mounted engine's job here (the engine's socket is ours); dind differs only in
    DOCKER_HOST and TLS, which the runner's service provides. A user's own before_script runs first
    and the install still happens; a failing script still leaves the image in the cache."""
    _, body = _component(
        {"scripts": "*.py", "engine": "socket", "install": str(ROOT), "options": "--timeout 300", "jobs": 2}
    )
    job = _job(body)
    assert job["variables"]["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    dind = _job(_component({"scripts": "a.py", "engine": "dind"})[1])
    assert dind["variables"]["DOCKER_HOST"] == "tcp://docker:2376" and dind["variables"]["DOCKER_TLS_VERIFY"] == "1"
    assert dind["services"] == [{"name": "docker:27-dind", "alias": "docker"}]
    (tmp_path / "a.py").write_text(HELLO)
    (tmp_path / "b.py").write_text(HELLO)
    (tmp_path / "fails.py").write_text(FAILING)
    key_file = tmp_path / "key"  # a File-type variable: GitLab writes the value to a temp file
    key_file.write_text(canary)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QISKIT_IBM", "VIRTUAL_ENV"))}
    env = {
        **base,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        **{k: str(v) for k, v in job["variables"].items()},
        **job["rules"][1]["variables"],  # the rule taken where the key is
        "QSANDBOX_PLATFORM": "local",  # (a rehearsal here: the real platform is not reachable)
        "QSANDBOX_API_KEY_FILE": str(key_file),
    }
    user_before = ["mkdir -p mine", "echo from-the-user > mine/mark"]
    done = _sh([*user_before, *job["script"]], tmp_path, env)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "mine" / "mark").read_text() == "from-the-user\n"
    doc = json.loads((tmp_path / "qsandbox-report.json").read_text())
    assert [(r["script"], r["passed"]) for r in doc["runs"]] == [("a.py", True), ("b.py", True), ("fails.py", False)]
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "qsandbox-junit.xml"))))
    failure = {c.name: c for c in suite}["fails.py"].result[0]
    assert failure.message == "ZeroDivisionError: division by zero" and "about to fail" in failure.text
    tarballs = list((tmp_path / ".qsandbox-cache").glob("qsandbox-image-*.tar"))  # what the cache keeps
    context = _context(tmp_path / ".qsandbox-cache" / "venv" / "bin" / "python")
    assert [t.name for t in tarballs] == [f"qsandbox-image-{os.uname().machine}-{context}.tar"]
    # A masked variable instead, the failing script gone, the image loaded from the cache.
    (tmp_path / "fails.py").unlink()
    env = {**env, "QSANDBOX_API_KEY": canary}
    del env["QSANDBOX_API_KEY_FILE"]
    done = _sh(job["script"], tmp_path, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Loaded image: qsandbox:" in done.stdout + done.stderr
    assert canary not in done.stdout + done.stderr
    # No key, the real platform asked for: fails at once and says why.
    del env["QSANDBOX_API_KEY"]
    done = _sh(job["script"], tmp_path, {**env, "QSANDBOX_PLATFORM": "ibm"})
    assert done.returncode == 2 and "qsandbox: no API key: set the masked variable QSANDBOX_API_KEY" in done.stderr
    # The fallback rule's rehearsal says so in the job's log.
    done = _sh(job["script"], tmp_path, {**env, **job["rules"][2]["variables"]})
    assert done.returncode == 0 and "qsandbox: rehearsing with --platform local: no QSANDBOX_API_KEY" in done.stderr
    shutil.rmtree(tmp_path / ".qsandbox-cache")
