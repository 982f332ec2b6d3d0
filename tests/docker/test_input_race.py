"""--workdir sends what the walk saw, or nothing: a file swapped for a link to a file outside the
project while qsandbox reads it is never followed (issue 31, finding 1), and host names are printed
escaped (finding 2). The real launcher against the real engine, racing a real swapper.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from helpers import qsandbox

SECRET = "SECRET-MARKER-9f3c1e-from-outside"
SWAPPED = 20  # files swapped independently: the old code leaked through one of them in nearly every try
FILLER = 5000  # files read before them: the time between the walk and the read
SHOW = """
import glob
for p in sorted(glob.glob("/work/zz_data_*")):
    print(p, open(p).read().strip())
"""
EVIL = "evil\x1b]0;x\x07"


def project(tmp_path: Path) -> tuple[Path, Path]:
    proj, outside = tmp_path / "proj", tmp_path / "outside"
    proj.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    for i in range(FILLER):
        (proj / f"f{i:05d}.txt").write_text("x")
    for i in range(SWAPPED):
        (outside / f"real_{i:02d}").write_text(f"honest-{i:02d}\n")  # kept: the same file comes back each time
        os.link(outside / f"real_{i:02d}", proj / f"zz_data_{i:02d}")
    (proj / "show.py").write_text(SHOW)
    (proj / EVIL).symlink_to(outside / "secret.txt")
    return proj, outside


def swapper(proj: Path, outside: Path, stop: threading.Event) -> None:
    """Each file, at random and every millisecond or so, a link to the secret or its honest self;
    each new entry made outside the project and renamed into place (so no name is ever missing)."""
    rng = random.Random(31)
    while not stop.is_set():
        for i in range(SWAPPED):
            tmp = outside / f"tmp_{i:02d}"
            if os.path.lexists(tmp):  # a rename between two links to one file does nothing (rename(2))
                tmp.unlink()
            if rng.random() < 0.5:
                tmp.symlink_to(outside / "secret.txt")
            else:
                os.link(outside / f"real_{i:02d}", tmp)
            os.replace(tmp, proj / f"zz_data_{i:02d}")
        time.sleep(0.001)


def test_a_link_swapped_in_while_the_inputs_are_read_is_never_followed(image, tmp_path):
    proj, outside = project(tmp_path)
    run = ("run", "--platform", "local", "--workdir", str(proj), str(proj / "show.py"))

    # Positive control, nothing racing: every file arrives, and the script prints what it got.
    quiet = qsandbox(*run)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    for i in range(SWAPPED):
        assert f"/work/zz_data_{i:02d} honest-{i:02d}" in quiet.stdout
    # The link named with escape sequences is left out, and named escaped.
    assert "qsandbox: not sent into the sandbox: evil\\x1b]0;x\\x07 (a symbolic link: not followed)" in quiet.stderr
    assert "\x1b]0;x" not in quiet.stderr and "\x07" not in quiet.stderr

    stop = threading.Event()
    thread = threading.Thread(target=swapper, args=(proj, outside, stop), daemon=True)
    thread.start()
    tries: list[tuple[int, str, str]] = []
    deadline = time.monotonic() + 20
    try:
        while len(tries) < 2 or (len(tries) < 8 and time.monotonic() < deadline):
            began = time.monotonic()
            done = qsandbox(*run)
            tries.append((done.returncode, done.stdout, done.stderr))
            print(f"try {len(tries)}: exit {done.returncode} in {time.monotonic() - began:.1f} s")
    finally:
        stop.set()
        thread.join()
    assert all(SECRET not in out + err for _, out, err in tries), "the secret outside the project was sent in"
    refused = [err for code, _, err in tries if code == 2 and "changed while the inputs were read" in err]
    assert refused, [(code, err[-500:]) for code, _, err in tries]
    last = refused[0].strip().splitlines()[-1]
    assert last.startswith("qsandbox: the input zz_data_"), last
    assert "refused, nothing was sent" in last
    print(f"{len(tries)} tries while racing: {len(refused)} refused, the rest sent only what the walk saw")
