"""A script's own dependencies run in an image derived from the sandbox's, built once and reused;
what contradicts the image's pins is refused before the key is read; the derived image keeps every
hardening property; it is reused only as the image qsandbox recorded building, never on its tag
alone; `qsandbox images` lists it and --prune removes it; `--image` takes only a lab image built
FROM ours."""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
import time

import docker.errors
import pytest
from helpers import ROOT, qsandbox

DEPS = ROOT / "tests" / "scripts" / "deps"


def key_command(marker) -> str:
    """A key source that leaves a trace when it is read: refusals must come before it."""
    helper = marker.parent / "key-helper.sh"
    helper.write_text(f"#!/bin/sh\ntouch {marker}\necho {'k' * 44}\n")
    helper.chmod(0o700)
    return str(helper)


def derived_tags(client) -> set[str]:
    return {t for i in client.images.list(name="qsandbox-deps") for t in i.tags}


def test_pep723_script_runs_in_a_derived_image_built_once_then_reused(image, docker_client, tmp_path):
    from qsandbox.launcher import deps

    needs = deps.from_script(DEPS / "table_pep723.py")
    assert needs is not None
    tag = deps.derived_tag(docker_client.images.get(image).id, needs.normalized())
    if tag in derived_tags(docker_client):
        docker_client.images.remove(tag)  # measure a real first build
    marker = tmp_path / "key-read"

    began = time.monotonic()
    first = qsandbox("run", "--platform", "local", str(DEPS / "table_pep723.py"), timeout=600)
    first_time = time.monotonic() - began
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"building {tag} (tabulate>=0.9), once" in first.stderr
    assert "Step 1/" in first.stderr  # the build's progress is shown
    assert re.search(r"state\s+count\n-+\s+-+\n\s+00\s+503", first.stdout)
    assert "bytecode from the build: True" in first.stdout  # compiled at build: the root is read-only

    began = time.monotonic()
    second = qsandbox(
        "run", "--platform", "local", "--token-command", key_command(marker), str(DEPS / "table_pep723.py")
    )
    second_time = time.monotonic() - began
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"reusing {tag}" in second.stderr and "Step 1/" not in second.stderr
    assert marker.exists()  # positive control for the refusal test: this key source leaves its trace
    print(f"first run (build) {first_time:.1f} s, second run (reuse) {second_time:.1f} s")


def test_derived_image_keeps_the_hardening(image, docker_client):
    from qsandbox.launcher import deps, doctor
    from qsandbox.launcher.settings import VERSION_LABEL, Hardening

    needs = deps.from_script(DEPS / "table_pep723.py")
    assert needs is not None
    tag = deps.ensure_image(docker_client, image, needs, say=lambda _l: None)
    base, derived = docker_client.images.get(image).attrs["Config"], docker_client.images.get(tag).attrs["Config"]
    assert derived["User"] == base["User"] == "10001:10001"
    assert derived["Entrypoint"] == base["Entrypoint"] and derived["WorkingDir"] == base["WorkingDir"]
    assert derived["Env"] == base["Env"]
    assert derived["Labels"][VERSION_LABEL] == base["Labels"][VERSION_LABEL]
    assert derived["Labels"][deps.DERIVED_LABEL] == docker_client.images.get(image).id
    # The doctor's probe, from inside the derived image, with the run's hardening.
    hardening = Hardening()
    seen: dict = doctor.probe(docker_client, hardening, tag)
    assert seen["uid"] == hardening.uid != 0 and seen["cap_eff"] == seen["cap_bnd"] == 0, seen
    assert seen["no_new_privs"] is True and seen["root_read_only"] is True and seen["core_limit"] == [0, 0], seen
    assert doctor._tmpfs_ok(seen["secret_dir"], hardening) == doctor._tmpfs_ok(seen["qiskit_dir"], hardening) == []


def test_requirements_file_for_a_script_without_metadata(image):
    done = qsandbox(
        "run", "--platform", "local", "--requirements", str(DEPS / "requirements.txt"), str(DEPS / "table_plain.py")
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"name\s+n\n-+\s+-+\nx\s+1", done.stdout)
    both = qsandbox(
        "run", "--platform", "local", "--requirements", str(DEPS / "requirements.txt"), str(DEPS / "table_pep723.py")
    )
    assert both.returncode == 2
    assert both.stderr.strip().splitlines()[-1] == (
        "qsandbox: table_pep723.py (# /// script) already declares dependencies: drop --requirements, or the block"
    )


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "pins_conflict.py",
            "qsandbox: pins_conflict.py (# /// script): qiskit-ibm-runtime<0.40 conflicts with the sandbox image's "
            "pinned qiskit-ibm-runtime==0.51.0 (the Qiskit stack stays as built): relax or drop that requirement",
        ),
        (
            "python_conflict.py",
            "qsandbox: python_conflict.py (# /// script) requires Python >=3.99; the sandbox image has 3.",
        ),
    ],
)
def test_conflict_with_the_pins_is_refused_before_the_key_is_read(image, docker_client, tmp_path, script, message):
    marker = tmp_path / "key-read"
    before = derived_tags(docker_client)
    done = qsandbox("run", "--platform", "local", "--token-command", key_command(marker), str(DEPS / script))
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(message), last
    assert not marker.exists()  # the key source was never read
    assert derived_tags(docker_client) == before  # and nothing was built


def test_images_lists_and_prune_removes_derived_images(image, docker_client, tmp_path):
    from qsandbox.launcher import deps

    env = {"XDG_CACHE_HOME": str(tmp_path)}
    needs = deps.Needs((deps.Requirement("tabulate>=0.8"),), None, "test")
    tag = deps.derived_tag(docker_client.images.get(image).id, needs.normalized())
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    try:
        deps.ensure_image(docker_client, image, needs, say=lambda _l: None)  # its id; its use is recorded by tag
        deps.record_use(tag, when=time.time() - 3 * 86400)  # last used three days ago
    finally:
        del os.environ["XDG_CACHE_HOME"]
    listed = qsandbox("images", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert rows[image].split()[1] == "base" and "MB" in rows[image]
    assert rows[tag].split()[1] == "derived" and rows[tag].endswith("tabulate>=0.8")
    kept = qsandbox("images", "--prune", "--days", "5", env=env)
    assert kept.returncode == 0 and tag in derived_tags(docker_client)
    pruned = qsandbox("images", "--prune", "--days", "2", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed {tag}" in pruned.stdout and tag not in derived_tags(docker_client)
    assert image in {t for i in docker_client.images.list(name="qsandbox") for t in i.tags}  # bases stay


POISON = "POISON-RAN-7c1d"


def test_a_derived_tag_qsandbox_did_not_build_is_never_run(image, docker_client, tmp_path):
    """Anyone with access to the engine can tag an image with the derived tag qsandbox would use
    (issue 31, finding 3). Poisoned here as an attacker would: FROM our image, with our labels and
    entry point, and a .pth file that runs in every Python process there, the entry point's
    included. qsandbox must build its own instead, name the tag, and reuse only what it built."""
    from qsandbox.launcher import deps

    script = tmp_path / "needs_tabulate.py"
    script.write_text(
        '# /// script\n# dependencies = ["tabulate>=0.8.1"]\n# ///\n'
        'import tabulate\nprint("tabulate", tabulate.__version__)\n'
    )
    needs = deps.from_script(script)
    assert needs is not None
    base_id = docker_client.images.get(image).id
    tag = deps.derived_tag(base_id, needs.normalized())
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # this user's record of what qsandbox built
    poisoned = (
        "USER 0:0\n"
        f"RUN echo 'import sys; print(\"{POISON}\", file=sys.stderr)' > "
        "$(ls -d /opt/qsandbox/lib/python3*/site-packages)/zz_poison.pth\n"
        f"USER {docker_client.images.get(image).attrs['Config']['User']}\n"
        f'LABEL {deps.DERIVED_LABEL}="{base_id}" {deps.REQUIREMENTS_LABEL}="tabulate>=0.8.1"'
    )
    poison = _lab_image(docker_client, image, tag, poisoned)
    poison_id = docker_client.images.get(poison).id
    made = [poison_id]  # removed at the end: the poison, and each image qsandbox built here
    try:
        # Positive control: the poison runs in any Python of that image, so a run in it would show it.
        logs = docker_client.containers.run(
            poison_id,
            entrypoint=["/opt/qsandbox/bin/python", "-c", "pass"],
            network_disabled=True,
            remove=True,
            stdout=False,
            stderr=True,
        )
        assert POISON in logs.decode()
        short = poison_id.removeprefix("sha256:")[:12]

        first = qsandbox("run", "--platform", "local", str(script), env=env, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        assert POISON not in first.stdout + first.stderr
        assert (
            f"{tag} on this engine is not one qsandbox built for you (the tag names image {short}, and qsandbox "
            "has no record of building it): not used" in first.stderr
        )
        assert f"building {tag} (tabulate>=0.8.1), once" in first.stderr
        assert "tabulate 0." in first.stdout
        built = docker_client.images.get(tag).id
        made.append(built)
        assert built != poison_id

        # The tag moved back onto the poisoned image after qsandbox built its own: named, built again.
        docker_client.images.get(poison_id).tag(*tag.split(":"))
        second = qsandbox("run", "--platform", "local", str(script), env=env, timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
        assert POISON not in second.stdout + second.stderr
        built_short = built.removeprefix("sha256:")[:12]
        assert f"(the tag now names image {short}, not {built_short}, which qsandbox built): not used" in second.stderr
        assert "Step 1/" in second.stderr
        made.append(docker_client.images.get(tag).id)

        # What qsandbox built and recorded is reused, without a build.
        third = qsandbox("run", "--platform", "local", str(script), env=env)
        assert third.returncode == 0, third.stderr[-3000:]
        assert f"reusing {tag}" in third.stderr and "Step 1/" not in third.stderr
        assert POISON not in third.stdout + third.stderr
    finally:
        for ref in (tag, *made):
            with contextlib.suppress(docker.errors.APIError):
                docker_client.images.remove(ref, force=True)


def test_a_derived_image_that_lost_its_labels_or_entry_point_is_not_reused(image, docker_client):
    """Even the image recorded as built is checked: labels and the base's entry point, user, command,
    environment and working directory (unit-level: the check itself, on real images)."""
    from qsandbox.launcher import deps

    base = docker_client.images.get(image)
    lines = ["tabulate>=0.8.2"]
    labels = f'LABEL {deps.DERIVED_LABEL}="{base.id}" {deps.REQUIREMENTS_LABEL}="tabulate>=0.8.2"'
    cases = {
        "qsandbox-test-derived:ok": (labels, ""),
        "qsandbox-test-derived:entry": (f'{labels}\nENTRYPOINT ["/bin/sh"]', "its entry point is ['/bin/sh']"),
        "qsandbox-test-derived:env": (f"{labels}\nENV PYTHONSTARTUP=/tmp/x", "its Env is"),
        "qsandbox-test-derived:reqs": (f'LABEL {deps.DERIVED_LABEL}="{base.id}"', "its qsandbox.requirements label"),
    }
    try:
        for tag, (extra, why) in cases.items():
            found = docker_client.images.get(_lab_image(docker_client, image, tag, extra))
            problem = deps._differs(found, base, lines)
            assert problem.startswith(why) if why else problem == "", (tag, problem)
    finally:
        for tag in cases:
            docker_client.images.remove(tag, force=True)


def _lab_image(client, base: str, tag: str, extra: str) -> str:
    dockerfile = f"FROM {base}\n{extra}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    client.images.build(fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=tag, rm=True)
    return tag


def test_lab_image_is_checked_by_label_and_entry_point(image, docker_client, tmp_path):
    good = _lab_image(docker_client, image, "qsandbox-test-lab:good", "LABEL org.example.lab=physics")
    moved = _lab_image(docker_client, image, "qsandbox-test-lab:entry", 'ENTRYPOINT ["/bin/sh"]')
    other = _lab_image(docker_client, "qsandbox-base:bookworm", "qsandbox-test-lab:unrelated", "LABEL x=y")
    old = _lab_image(docker_client, image, "qsandbox-test-lab:old", "LABEL qsandbox.version=0.0.9")
    marker = tmp_path / "key-read"
    script = str(ROOT / "tests" / "scripts" / "exit_with.py")
    try:
        ok = qsandbox("run", "--platform", "local", "--image", good, script, "0")
        assert ok.returncode == 0, ok.stderr[-2000:]
        for tag, reason in [
            (moved, "has entry point ['/bin/sh'], not qsandbox's"),
            (other, "has no qsandbox.version label, so it is not built FROM qsandbox:"),
            (old, "is built FROM qsandbox 0.0.9's image, this is 0.2.1.dev1: rebuild it FROM qsandbox:0.2.1.dev1"),
        ]:
            done = qsandbox(
                "run", "--platform", "local", "--token-command", key_command(marker), "--image", tag, script
            )
            assert done.returncode == 2, done.stderr[-2000:]
            assert done.stderr.strip().splitlines()[-1].startswith(f"qsandbox: --image {tag} {reason}")
            assert not marker.exists()
    finally:
        for tag in (good, moved, other, old):
            docker_client.images.remove(tag, force=True)
