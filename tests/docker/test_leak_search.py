"""The leak search itself must be able to fail: a positive control for every place and every form.

Each test plants the canary, in every form a writer would produce (literal, URL-encoded, base64
and base64url at base64's three alignments), in one kind of place the search promises to cover,
and shows the search finds each one there. And a place the search cannot read is reported as not
searched, never as zero hits.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, new_canary

from qsandbox.launcher.checks.audit import LeakSearch, planted_forms
from qsandbox.launcher.core.settings import LABEL

OLD = 946684800  # 2000-01-01: the timestamp a copy (cp -p, tar, copy2, utime) may keep


@pytest.fixture
def value() -> str:
    # A key-shaped canary plus characters URL-encoding changes, so the URL-encoded form differs.
    return new_canary()[:41] + "+/="


def _plant(directory: Path, value: str, tag: str) -> dict[str, Path]:
    """One file per form, each with its mtime set far in the past (its ctime is now)."""
    planted = {}
    for form, data in planted_forms(value).items():
        p = directory / f"qsandbox-control-{tag}-{form}"
        p.write_bytes(b"some text before\n" + data + b"some text after\n")
        os.utime(p, (OLD, OLD))
        planted[form] = p
    return planted


def test_planted_forms_cover_every_encoding(value):
    forms = planted_forms(value)
    assert set(forms) == {"literal", "url-encoded", *(f"base64{u}+{s}" for u in ("", "url") for s in range(3))}
    assert b"%2B%2F%3D" in forms["url-encoded"] and value.encode() not in forms["url-encoded"]
    assert len({v for k, v in forms.items() if k.startswith("base64")}) == 6  # really distinct encodings


@pytest.mark.parametrize("place", ["/tmp", "/var/tmp", "/dev/shm", "/var/log", "home", "project"])
def test_a_file_with_an_old_mtime_is_found_in_every_host_place(docker_client, value, tmp_path, place):
    directory = {"home": Path.home(), "project": tmp_path}.get(place, Path(place))
    search = LeakSearch(docker_client, value, project=tmp_path)
    tag = secrets.token_hex(4)
    planted = _plant(directory, value, tag)
    # and a copy that keeps the original's old times, the way cp -p, tar and shutil.copy2 do
    copied = directory / f"qsandbox-control-{tag}-copy2"
    shutil.copy2(planted["base64+1"], copied)
    try:
        assert copied.stat().st_mtime == OLD
        places = search.host_dirs()
    finally:
        for p in [*planted.values(), copied]:
            p.unlink()
    place_name = "project tree" if place == "project" else f"host {directory}" if place != "home" else "host home"
    (found,) = [p for p in places if p.name.startswith(place_name)]
    assert not found.failed, found.line()
    for form, p in [*planted.items(), ("copy2", copied)]:
        assert str(p) in found.hits, f"{form} not found in {found.line()}"
    assert "searched" in found.line() and found.line().startswith(f"{len(found.hits)} hit(s) in ")


def test_a_deep_write_into_an_existing_image_layer_is_found(docker_client, image, value):
    """The old layer search looked only inside layers whose top directory was new."""
    search = LeakSearch(docker_client, value)
    base_layer = Path(docker_client.api.inspect_image(image)["GraphDriver"]["Data"]["LowerDir"].split(":")[-1])
    layer_top = base_layer.parent
    assert layer_top.stat().st_mtime < search.since  # a layer made before the search began
    deep = next(
        Path(d)
        for d, _, _ in os.walk(base_layer / "usr" / "share")
        if d.count("/") >= base_layer.as_posix().count("/") + 4
    )
    times = deep.stat()
    planted = _plant(deep, value, secrets.token_hex(4))
    os.utime(deep, ns=(times.st_atime_ns, times.st_mtime_ns))  # the directory looks untouched
    try:
        place = search.data_root()
    finally:
        for p in planted.values():
            p.unlink()
        os.utime(deep, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert layer_top.stat().st_mtime < search.since
    assert not place.failed, place.line()
    for form, p in planted.items():
        assert str(p) in place.hits, f"{form} in {deep} not found: {place.line()}"


@pytest.mark.parametrize("where", ["data-root-tmp", "/run/docker", "/run/containerd"])
def test_engine_state_directories_are_searched(docker_client, value, where):
    directory = Path(docker_client.info()["DockerRootDir"], "tmp") if where == "data-root-tmp" else Path(where)
    if not directory.is_dir():
        pytest.skip(f"{directory} is not on this host")
    search = LeakSearch(docker_client, value)
    planted = _plant(directory, value, secrets.token_hex(4))
    try:
        places = [search.data_root(), *search.engine_runtime()]
    finally:
        for p in planted.values():
            p.unlink()
    hits = {h for p in places for h in p.hits}
    assert not [p.line() for p in places if p.failed]
    for form, p in planted.items():
        assert str(p) in hits, f"{form} not found in {directory}"


def test_absent_engine_state_is_skipped_with_its_reason(docker_client, value):
    search = LeakSearch(docker_client, value)
    for place in search.engine_runtime():
        path = Path(place.name.split()[-1])
        if path.exists():
            assert not place.skipped and not place.failed, place.line()
        else:
            assert place.line() == f"skipped engine runtime state {path}: not present on this host"


JOURNALD = "/lib/systemd/systemd-journald"


@pytest.fixture(scope="module")
def journald() -> Iterator[None]:
    """A journald: the machine's when one runs; else one started for these tests (volatile
    storage under /run/log/journal), stopped and its files removed after them."""
    if Path("/run/systemd/journal/socket").exists():
        yield
        return
    if os.getuid() != 0 or not Path(JOURNALD).exists():
        pytest.skip(f"no journald running, and none to start ({JOURNALD}, as root)")
    made = [p for p in (Path("/run/systemd/journal"), Path("/run/log/journal")) if not p.exists()]
    proc = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        end = time.monotonic() + 30
        while not Path("/run/systemd/journal/socket").exists():
            assert proc.poll() is None and time.monotonic() < end, f"{JOURNALD} did not start (exit {proc.poll()})"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        for p in made:
            shutil.rmtree(p, ignore_errors=True)


@pytest.mark.changes_machine("starts systemd-journald when none runs (stopped after the tests, its files removed)")
def test_the_journal_is_searched_with_its_control_and_finds_every_form(docker_client, value, journald):
    search = LeakSearch(docker_client, value)
    for data in planted_forms(value).values():
        subprocess.run(["systemd-cat", "-t", "qsandbox-test-key"], input=data, check=True)
    place = search.journal()  # it waits for its own control, logged after these
    assert place.hits == ["journal entries"], place.line()
    assert not place.failed and place.planted == len(planted_forms(value)), place.line()
    assert place.line().startswith("1 hit(s) in the systemd journal since the search began: ")


@pytest.mark.changes_machine("starts systemd-journald when none runs (stopped after the tests, its files removed)")
def test_a_journal_not_ours_to_read_is_not_searched(journald, public_dir):
    """journalctl as an ordinary user (not in systemd-journal or adm) reads its own entries only,
    the control's among them: the system journal's files make the place NOT SEARCHED."""
    if os.getuid() != 0 or not Path(_NOBODY_PYTHON).exists():
        pytest.skip("needs root to drop to nobody, and a system Python")
    done = _as_nobody(_NOBODY_PYTHON, "-c", NOBODY_JOURNAL, cwd=public_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("NOT SEARCHED the systemd journal since the search began: could not read "), (
        done.stdout
    )
    assert "[--allow-unsearched journal]" in done.stdout
    assert " hit(s) in the systemd journal" not in done.stdout.split(":", 1)[0]


NOBODY_JOURNAL = """
from qsandbox.launcher.checks.audit import LeakSearch
print(LeakSearch(None, "x" * 44).journal().line())
"""


@pytest.fixture
def control_container(docker_client, image, value, canary):
    """A running container holding every form of `value` in its command, its entrypoint's argv,
    environment and labels, and `canary` (names cannot hold "+/=") in its name and in a bind
    mount's source path."""
    forms = list(planted_forms(value).values())
    marker = f"control-{secrets.token_hex(6)}"
    mount_src = Path(f"/tmp/qsandbox-control-{canary}")  # a name holding the key
    mount_src.mkdir()
    c = docker_client.containers.run(
        image,
        entrypoint=["/bin/sh", "-c", "sleep 120", *(f.decode().strip() for f in forms)],
        command=[marker, *(f.decode().strip() for f in forms)],
        environment={f"FORM{i}": f.decode().strip() for i, f in enumerate(forms)},
        labels={LABEL: marker, **{f"form{i}": f.decode().strip() for i, f in enumerate(forms)}},
        name=f"qsandbox-control-{canary}",
        volumes={str(mount_src): {"bind": "/mnt", "mode": "ro"}},
        user="10001",
        network_mode="none",
        detach=True,
    )
    try:
        yield marker, len(forms)
    finally:
        c.remove(force=True)
        mount_src.rmdir()


def test_the_live_sandbox_search_finds_every_field(docker_client, value, canary, control_container):
    marker, n = control_container
    search = LeakSearch(docker_client, value)
    search.since -= 5  # the container was made just before: its events too
    end = time.monotonic() + 10
    while True:  # top lists the container's process once it runs: the search must see it there
        place = search.live_container(marker)
        fields = {h.split(" ", 2)[2] for h in place.hits}
        if any(f.startswith("top.Processes") for f in fields) or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert place.searched == 1 and not place.failed, place.line()
    for i in range(n):
        assert f"Config.Env[{i}]" in fields
        assert f"Config.Labels.form{i}" in fields
        assert f"Config.Cmd[{i + 1}]" in fields
        assert f"Config.Entrypoint[{i + 3}]" in fields
    assert any(f.startswith("top.Processes") for f in fields), sorted(fields)  # its argv, as the engine shows it
    named = LeakSearch(docker_client, canary).live_container(marker)
    fields = {h.split(" ", 2)[2] for h in named.hits}
    assert {"Name", "HostConfig.Binds[0]", "Mounts[0].Source"} <= fields, sorted(fields)
    # and the same container in the sweep of every container, and in the engine's events
    assert any("Config.Env[0]" in h for h in search.engine_objects().hits)
    events = search.engine_events()
    assert any("Actor.Attributes.form0" in h for h in events.hits), events.line()


def test_the_engine_events_keep_what_a_removed_container_carried(docker_client, image, value):
    search = LeakSearch(docker_client, value)
    forms = list(planted_forms(value).values())
    c = docker_client.containers.create(image, command=["x"], labels={f"f{i}": f.decode() for i, f in enumerate(forms)})
    c.remove()
    place = search.engine_events()
    assert not place.failed
    for i in range(len(forms)):
        assert any(h.endswith(f"Actor.Attributes.f{i}") for h in place.hits), place.line()


def test_a_container_after_the_run_env_and_label(docker_client, image, value):
    search = LeakSearch(docker_client, value)
    forms = list(planted_forms(value).values())
    c = docker_client.containers.create(
        image,
        command=["x"],
        environment={f"F{i}": f.decode() for i, f in enumerate(forms)},
        labels={f"f{i}": f.decode() for i, f in enumerate(forms)},
    )
    try:
        place = search.engine_objects()
    finally:
        c.remove()
    mine = {h.split(" ", 2)[2] for h in place.hits if h.startswith(f"container {c.id[:12]} ")}
    assert {f"Config.Env[{i}]" for i in range(len(forms))} <= mine
    assert {f"Config.Labels.f{i}" for i in range(len(forms))} <= mine


def test_process_argv_and_environment_every_form(docker_client, value):
    search = LeakSearch(docker_client, value)
    procs = {}
    try:
        for form, data in planted_forms(value).items():
            text = data.decode().strip()
            procs[(form, "cmdline")] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", text])
            procs[(form, "environ")] = subprocess.Popen(["sleep", "60"], env={"PATH": os.environ["PATH"], "X": text})
        end = time.monotonic() + 30  # each has exec'd: its /proc entry shows its own argv
        for (_form, part), p in procs.items():
            want = b"sleep" if part == "environ" else b"import time"
            while want not in Path(f"/proc/{p.pid}/cmdline").read_bytes():
                assert time.monotonic() < end, f"process {p.pid} did not exec"
                time.sleep(0.01)
        sweep = search.processes()
        named = search.processes([p.pid for p in procs.values()], "the controls", "launcher")
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    for place in (sweep, named):
        for (form, part), p in procs.items():
            assert f"/proc/{p.pid}/{part}" in place.hits, f"{form} in {part}: {place.line()}"
    assert not named.failed


def test_a_process_that_cannot_be_read_is_not_searched(docker_client, value):
    p = subprocess.Popen(["true"])
    p.wait()  # reaped: its /proc entry is gone
    place = LeakSearch(docker_client, value).processes([p.pid], "the launcher", "launcher")
    assert place.failed
    assert place.line().startswith("NOT SEARCHED the launcher: could not read /proc/")
    assert "0 hit(s) in the launcher" not in place.line()


NOBODY_SEARCH = """
import sys
from collections.abc import Iterator
from pathlib import Path
from qsandbox.launcher.checks.audit import LeakSearch

class Engine:  # what the engine says of itself; nobody may not read what it names
    def info(self):
        return {"DockerRootDir": sys.argv[1]}

s = LeakSearch(Engine(), "x" * 44, project=Path(sys.argv[2]))
for p in [s.data_root(), *s.host_dirs()]:
    print(p.line())
"""


# nobody cannot reach this venv's interpreter (it lives under /root): the system's Python 3.11
# with the venv's packages and the checkout's sources instead.
_NOBODY_PYTHON = "/usr/bin/python3"
_NOBODY_PATH = f"{ROOT / 'src'}:{sysconfig.get_path('purelib')}"


def _as_nobody(*argv: str, groups: tuple[int, ...] = (), cwd: Path = Path("/")) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        user=65534,
        group=65534,
        extra_groups=list(groups),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", "PYTHONPATH": _NOBODY_PATH},
    )


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory nobody can reach (pytest's tmp_path lies under a root-only directory)."""
    d = Path(tempfile.mkdtemp(prefix="qsandbox-nobody-"))
    d.chmod(0o755)  # nobody must reach it; it holds no secret
    yield d
    shutil.rmtree(d)


def test_an_unreadable_data_root_or_file_is_not_searched_never_zero(docker_client, public_dir):
    if os.getuid() != 0 or not Path(_NOBODY_PYTHON).exists():
        pytest.skip("needs root to drop to nobody, and a system Python")
    project = public_dir
    secret = project / "root-only.txt"
    secret.write_text("written during the run, not ours to read")
    secret.chmod(0o600)
    root = docker_client.info()["DockerRootDir"]
    done = _as_nobody(_NOBODY_PYTHON, "-c", NOBODY_SEARCH, root, str(project))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(
        f"NOT SEARCHED engine data root {root} (container dirs, logs, layers): could not read {root}/"
    )
    assert "Permission denied" in lines[0]
    assert not any(line.startswith("0 hit(s) in engine data root") for line in lines)
    (proj,) = [line for line in lines if "project tree" in line]
    assert proj.startswith(f"NOT SEARCHED project tree {project}: could not read {secret} (Permission denied)")
    assert "skipped host home /nonexistent: not present on this host" in lines


@pytest.mark.changes_machine("starts systemd-journald when none runs (stopped after the tests, its files removed)")
def test_audit_as_an_ordinary_docker_user_is_not_a_pass_while_the_journal_is_unreadable(
    image, docker_client, public_dir, journald
):
    """A docker-group member is not root: with the data root accepted as unreadable, the system
    journal (not the member's to read) still keeps the audit from passing."""
    if os.getuid() != 0 or not Path(_NOBODY_PYTHON).exists():
        pytest.skip("needs root to drop to nobody, and a system Python")
    docker_gid = os.stat("/var/run/docker.sock").st_gid
    done = _as_nobody(
        _NOBODY_PYTHON,
        "-m",
        "qsandbox",
        "audit",
        "--path",
        "success",
        "--allow-unsearched",
        "data-root",
        groups=(docker_gid,),
        cwd=public_dir,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 125, out
    assert "exit path success: launcher exit 0, 0 hit(s), " in done.stdout, out
    (root,) = [line for line in done.stdout.splitlines() if "engine data root " in line]
    assert root.strip().startswith("NOT SEARCHED engine data root ") and root.endswith("(accepted: --allow-unsearched)")
    (journal,) = [line for line in done.stdout.splitlines() if "systemd journal" in line]
    assert journal.strip().startswith("NOT SEARCHED the systemd journal since the search began: could not read ")
    assert "0 hit(s) in the systemd journal" not in done.stdout
    assert "NOT A PASS" in done.stderr and "success: journal" in done.stderr, done.stderr
    assert "success: data-root" not in done.stderr


# -- each search's own control ----------------------------------------------------------------------


def test_a_search_blind_to_its_own_control_is_not_searched_anywhere(docker_client, image, value, tmp_path):
    """The controls are what proves a "0 hits": a search whose needles miss them is NOT SEARCHED in
    every place it searched, never zero."""
    search = LeakSearch(docker_client, value, project=tmp_path)
    search.control_needles = [b"\0matches nothing\0"]
    search.deadline = 2  # each wait for a control it cannot see ends there
    marker = f"blind-{secrets.token_hex(6)}"
    c = docker_client.containers.run(
        image,
        entrypoint=["/bin/sh", "-c", "sleep 120", marker],
        labels={LABEL: marker},
        network_mode="none",
        detach=True,
    )
    try:
        places = [*search.live(marker, launcher=os.getpid()), *search.all()]
    finally:
        c.remove(force=True)
    searched = [p for p in places if not p.skipped]
    assert len(searched) >= 12, [p.line() for p in places]
    for p in searched:
        assert p.failed and "its own control was not found" in p.line(), p.line()
        assert not p.line().startswith("0 hit(s)"), p.line()


def test_each_place_says_its_control_was_found(docker_client, image, value, tmp_path):
    search = LeakSearch(docker_client, value, project=tmp_path)
    for p in search.all():
        if not p.skipped:
            assert p.planted and not p.failed, p.line()
            assert p.line().startswith("0 hit(s) in ") and f"; control found ({p.planted} planted)" in p.line()


# -- compressed files ---------------------------------------------------------------------------------


def test_compressed_files_are_searched_decompressed(docker_client, value, tmp_path):
    import bz2
    import gzip
    import lzma

    data = b"x" * 5000 + planted_forms(value)["base64+1"] + b"y" * 5000  # compressible: coded, not stored
    (tmp_path / "rotated.log.1.gz").write_bytes(gzip.compress(data))
    (tmp_path / "no-suffix").write_bytes(gzip.compress(data))  # found by its magic, not its name
    (tmp_path / "a.bz2").write_bytes(bz2.compress(data))
    (tmp_path / "a.xz").write_bytes(lzma.compress(data))
    for f in tmp_path.iterdir():
        assert not any(n in f.read_bytes() for n in LeakSearch(docker_client, value).needles), f  # not readable raw
    (place,) = [p for p in LeakSearch(docker_client, value, project=tmp_path).host_dirs() if p.key == "project"]
    assert sorted(place.hits) == sorted(str(f) for f in tmp_path.iterdir()), place.line()
    assert not place.failed, place.line()


def test_a_compressed_file_that_cannot_be_decompressed_is_not_searched(docker_client, value, tmp_path):
    (tmp_path / "cut.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 40)  # a gzip header, then garbage
    zstd = tmp_path / "layer.tar.zst"
    zstd.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))
    (place,) = [p for p in LeakSearch(docker_client, value, project=tmp_path).host_dirs() if p.key == "project"]
    assert place.failed, place.line()
    assert any(u.startswith(f"{tmp_path / 'cut.gz'} (") for u in place.unreadable), place.line()
    assert any(u.startswith(f"{zstd} (") for u in place.unreadable), place.line()  # undecodable or no module
    assert place.line().startswith("NOT SEARCHED project tree ")


def test_a_key_only_in_a_git_pack_is_found(docker_client, value, tmp_path):
    """A commit holding the key, then packed (git gc) and the file deleted: only the pack has it,
    zlib-compressed; it is read through git cat-file --batch-all-objects."""
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "notes.txt").write_bytes(b"a line\n" * 200 + planted_forms(value)["literal"])
    subprocess.run([*git, "add", "notes.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    subprocess.run([*git, "gc", "-q", "--prune=now"], check=True)
    (repo / "notes.txt").unlink()
    packs = list((repo / ".git" / "objects" / "pack").glob("*.pack"))
    assert packs and not any(value.encode() in p.read_bytes() for p in packs)  # not there raw
    (place,) = [p for p in LeakSearch(docker_client, value, project=tmp_path).host_dirs() if p.key == "project"]
    assert [str(p) for p in packs] == [h for h in place.hits if h.endswith(".pack")], place.line()
    assert not place.failed, place.line()


# -- where the engine is ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["ssh://someone@engine.example", "tcp://engine.example:2376"])
def test_a_remote_engines_host_places_are_not_searched(docker_client, value, tmp_path, url):
    places = LeakSearch(docker_client, value, project=tmp_path, docker_host=url).all()
    by_key = {p.key: p for p in places}
    for key in ("data-root", "engine-run", "engine-host"):
        line = by_key[key].line()
        assert line.startswith("NOT SEARCHED "), line
        assert f"it is on the engine's host ({url}), not this machine" in line
    # The engine-side view still runs (with its control), and the launcher's own host is searched.
    assert not by_key["engine-objects"].failed and by_key["engine-objects"].planted, by_key["engine-objects"].line()
    assert by_key["host-tmp"].name == "launcher host /tmp" and not by_key["host-tmp"].failed


def test_the_runtime_dir_of_the_engines_user_is_searched(docker_client, value):
    """A rootless engine's socket under /run/user/UID: that directory (libpod, exec-root, the
    engine's runtime state) is a place, with its control."""
    users = sorted(int(d.name) for d in Path("/run/user").iterdir() if d.name.isdigit() and d.name != str(os.getuid()))
    if os.getuid() != 0 or not users:
        pytest.skip("needs root and another user's /run/user/UID (scripts/podman-users.sh makes two)")
    url = f"unix:///run/user/{users[0]}/podman/podman.sock"
    search = LeakSearch(docker_client, value, docker_host=url)
    planted = _plant(Path(f"/run/user/{users[0]}"), value, secrets.token_hex(4))
    try:
        places = search.engine_runtime()
    finally:
        for p in planted.values():
            p.unlink()
    (mine,) = [p for p in places if p.name == f"engine runtime state /run/user/{users[0]}"]
    assert not mine.failed and mine.planted, mine.line()
    assert sorted(mine.hits) == sorted(str(p) for p in planted.values()), mine.line()
