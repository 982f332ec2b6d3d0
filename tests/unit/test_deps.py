"""A script's own dependencies: PEP 723 as the PEP reads it, requirements files, the pins kept."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from qsandbox.common.errors import ExitCode, UsageError
from qsandbox.launcher import deps

# The example from PEP 723 itself.
PEP_EXAMPLE = """\
# /// script
# requires-python = ">=3.11"
# dependencies = [
#   "requests<3",
#   "rich",
# ]
# ///

import requests
"""

PINS = deps.parse_constraints("# python 3.11.2\nnumpy==2.3.4\nqiskit-ibm-runtime==0.51.0\nRich_Text==1.0\n")


def needs(*reqs: str, python: str | None = None) -> deps.Needs:
    return deps.Needs(tuple(Requirement(r) for r in reqs), SpecifierSet(python) if python else None, "s.py")


def test_pep723_example_reads_as_the_pep_says():
    assert deps.read_pep723(PEP_EXAMPLE) == {"requires-python": ">=3.11", "dependencies": ["requests<3", "rich"]}


def test_pep723_block_details():
    assert deps.read_pep723("import os\n") is None
    # a bare `#` line is an empty line of TOML; the block must end with `# ///` alone
    assert deps.read_pep723('# /// script\n# dependencies = ["a"]\n#\n# ///\n') == {"dependencies": ["a"]}
    assert deps.read_pep723('# /// script\n# dependencies = ["a"]\n') is None  # never closed
    assert deps.read_pep723("# /// pyproject\n# x = 1\n# ///\n") is None  # another type
    with pytest.raises(ValueError, match="Multiple script blocks found"):
        deps.read_pep723("# /// script\n# a = 1\n# ///\nx = 1\n# /// script\n# b = 1\n# ///\n")


def test_from_script(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(PEP_EXAMPLE)
    found = deps.from_script(script)
    assert found is not None and [str(r) for r in found.requirements] == ["requests<3", "rich"]
    assert found.requires_python == SpecifierSet(">=3.11") and found.source == "s.py (# /// script)"
    script.write_text('# /// script\n# dependencies = ["not a requirement!"]\n# ///\n')
    with pytest.raises(UsageError, match=r"s.py \(# /// script\): not a requirement: 'not a requirement!'"):
        deps.from_script(script)
    script.write_text('# /// script\n# dependencies = "tabulate"\n# ///\n')
    with pytest.raises(UsageError, match="`dependencies` must be a list of strings"):
        deps.from_script(script)
    script.write_text("# /// script\n# dependencies = [\n# ///\n")
    with pytest.raises(UsageError, match="malformed inline metadata"):
        deps.from_script(script)


def test_requirements_file(tmp_path):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# a comment\n\ntabulate>=0.9  # inline\nrich[jupyter]; python_version >= '3.8'\n")
    found = deps.from_requirements(reqs)
    assert [str(r) for r in found.requirements] == ["tabulate>=0.9", 'rich[jupyter]; python_version >= "3.8"']
    reqs.write_text("tabulate\n--index-url https://example.invalid/simple\n")
    with pytest.raises(UsageError, match=r"line 2: pip options \(--index-url\) are not supported"):
        deps.from_requirements(reqs)


def test_metadata_and_requirements_together_are_refused(tmp_path):
    script, reqs = tmp_path / "s.py", tmp_path / "r.txt"
    script.write_text(PEP_EXAMPLE)
    reqs.write_text("tabulate\n")
    with pytest.raises(UsageError, match="already declares dependencies: drop --requirements"):
        deps.for_script(script, reqs)
    script.write_text("print(1)\n")
    assert deps.for_script(script, None) is None
    assert deps.for_script(script, reqs) is not None


def test_normalized_is_canonical_sorted_and_unique():
    assert needs("Tabulate>=0.9", "tabulate >= 0.9", "Rich_Text").normalized() == ["rich-text", "tabulate>=0.9"]


def test_pins_are_kept():
    assert deps.check(needs("tabulate", "numpy>=2", "qiskit-ibm-runtime"), PINS) == [
        Requirement("tabulate"),
        Requirement("numpy>=2"),
        Requirement("qiskit-ibm-runtime"),
    ]
    with pytest.raises(deps.DependencyConflict) as refused:
        deps.check(needs("tabulate", "numpy<2"), PINS)
    assert str(refused.value) == (
        "s.py: numpy<2 conflicts with the sandbox image's pinned numpy==2.3.4 (the Qiskit stack stays as built): "
        "relax or drop that requirement"
    )
    assert refused.value.exit_code == ExitCode.USAGE
    with pytest.raises(deps.DependencyConflict, match=r"pinned rich.text==1.0"):
        deps.check(needs("rich.text==2"), PINS)  # names compare canonically (Rich_Text)
    with pytest.raises(deps.DependencyConflict):
        deps.check(needs("numpy @ https://example.invalid/numpy.whl"), PINS)  # a URL replaces the pin


def test_markers_are_evaluated_for_the_images_python():
    assert deps.check(needs("numpy<2; python_version < '3.10'", "tabulate; python_version >= '3.11'"), PINS) == [
        Requirement("tabulate; python_version >= '3.11'")
    ]


def test_requires_python_is_checked_against_the_image():
    assert deps.check(needs(python=">=3.11"), PINS) == []
    with pytest.raises(deps.DependencyConflict, match=r"requires Python >=3.13; the sandbox image has 3.11.2"):
        deps.check(needs("tabulate", python=">=3.13"), PINS)


def test_derived_tag_names_version_base_and_requirements():
    tag = deps.derived_tag("sha256:aaa", ["tabulate"])
    assert tag == deps.derived_tag("sha256:aaa", ["tabulate"])
    assert tag.startswith("qsandbox-deps:0.2.1.dev1-") and len(tag.split("-")[-1]) == 16
    assert tag != deps.derived_tag("sha256:bbb", ["tabulate"]) != deps.derived_tag("sha256:aaa", ["tabulate<1"])


def test_last_use_is_recorded_in_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    deps.record_use("qsandbox-deps:x", when=100.0)
    deps.record_use("qsandbox:0.2.0", when=200.0)
    assert deps._last_uses() == {"qsandbox-deps:x": 100.0, "qsandbox:0.2.0": 200.0}
    assert (tmp_path / "qsandbox" / "last-used.json").is_file()
