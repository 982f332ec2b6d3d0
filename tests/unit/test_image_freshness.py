"""The image's freshness label (launcher/engine/image.py): the digest of the build context's files that
run in the image; an image whose label differs is refused with `qsandbox build` as the remedy."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from qsandbox import __version__
from qsandbox.common.errors import ExitCode, ImageError
from qsandbox.launcher.core.settings import VERSION_LABEL
from qsandbox.launcher.engine import image


@pytest.fixture
def package(tmp_path) -> Path:
    copy = tmp_path / "qsandbox"
    shutil.copytree(image.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return copy


def test_the_digest_follows_what_runs_in_the_image_not_the_launcher(package):
    before = image.context_digest(package)
    assert before == image.context_digest(image.PACKAGE)  # the same bytes, wherever they are installed
    (package / "launcher" / "cli.py").write_text("# the launcher changed\n")
    assert image.context_digest(package) == before
    for changed in ("inside/entry.py", "platform/__init__.py", "common/redact.py", "image/requirements.txt"):
        path = package / changed
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        assert image.context_digest(package) != before, changed
        path.write_bytes(original)
    assert image.context_digest(package) == before


class Found:
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.attrs: dict[str, Any] = {
            "Size": 1e9,
            "Config": {"Entrypoint": image.module_entrypoint("qsandbox.inside.entry")},
        }
        self.short_id = "sha256:0123456789ab"


class Client:
    def __init__(self, labels: dict[str, str]) -> None:
        found = Found(labels)

        class Images:
            def get(self, name: str) -> Found:
                return found

        self.images = Images()


@pytest.mark.parametrize("label", [None, "0" * 64])
def test_a_stale_or_unlabelled_image_is_refused_with_the_remedy(label):
    labels = {VERSION_LABEL: __version__, **({image.CONTEXT_LABEL: label} if label else {})}
    with pytest.raises(image.ImageStale) as raised:
        image.check(Client(labels), "qsandbox:x")  # type: ignore[arg-type]
    assert str(raised.value).endswith("run `qsandbox build`")
    assert raised.value.exit_code == ExitCode.USAGE and isinstance(raised.value, ImageError)  # the fixture rebuilds
    with pytest.raises(image.ImageStale, match=r"--image lab:1 is built FROM an image of other sources"):
        image.check_lab_image(Client(labels), "lab:1")  # type: ignore[arg-type]


def test_a_fresh_image_passes():
    labels = {VERSION_LABEL: __version__, image.CONTEXT_LABEL: image.context_digest()}
    assert image.check(Client(labels), "qsandbox:x").startswith("qsandbox:x (0123456789ab")  # type: ignore[arg-type]
    image.check_lab_image(Client(labels), "lab:1")  # type: ignore[arg-type]
