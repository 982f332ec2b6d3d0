from __future__ import annotations

import os
import pickle
import sys

import pytest

from qsandbox.common.errors import ExitCode, UsageError
from qsandbox.launcher.core.credentials import KeySource, Secret, validate


def test_secret_never_prints_its_value():
    s = Secret("canary-value-0123456789abcdef", "a test")
    old_style = "%s" % (s,)  # noqa: UP031 - old-style formatting must hide it too
    for text in (str(s), repr(s), f"{s}", f"{s!r}", old_style, str([s]), str({"k": s})):
        assert "canary-value" not in text
        assert "a test" in text
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert s.reveal() == "canary-value-0123456789abcdef"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("\n", "is empty"),
        ("abc", "only 3 characters"),
        ("a" * 600, "600 characters long"),
        ("abcdefgh ijklmnopqrstu", "whitespace"),
        ("abcdefgh\tijklmnopqrstu", "whitespace"),
        ("abcdefghijklmnop\x1bqrstu", "control or non-ASCII"),
        ("abcdefghijklmnopqrstuvé", "control or non-ASCII"),
        ("abcdefghijklmnop\nqrstuvwxyz\n", "whitespace"),
    ],
)
def test_validate_refuses_what_cannot_be_a_key(value, message):
    with pytest.raises(UsageError, match=message) as info:
        validate(value, "test")
    assert info.value.exit_code == ExitCode.USAGE
    if len(value) > 3:
        assert value.strip() not in str(info.value)


def test_validate_strips_one_trailing_newline():
    assert validate("abcdefghijklmnopqrstuvwxyz\n", "t").reveal() == "abcdefghijklmnopqrstuvwxyz"
    assert validate("abcdefghijklmnopqrstuvwxyz\r\n", "t").reveal() == "abcdefghijklmnopqrstuvwxyz"


def test_env_source_is_removed_from_environment_and_proc(monkeypatch):
    monkeypatch.setenv("QS_UNIT_KEY", "unit-canary-abcdefghijklmnop")
    secret = KeySource(env="QS_UNIT_KEY").read()
    assert secret.reveal() == "unit-canary-abcdefghijklmnop"
    assert "QS_UNIT_KEY" not in os.environ


def test_two_sources_are_refused():
    with pytest.raises(UsageError, match="give one key source, not --token-file and --token-env"):
        KeySource(file="/x", env="Y").check()


def test_no_source_without_terminal(monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    with pytest.raises(UsageError, match="no API key source and no terminal"):
        KeySource().check()


def test_prompt_is_used_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    assert KeySource().read(prompt=lambda: "typed-key-abcdefghijklmnop").reveal() == "typed-key-abcdefghijklmnop"


def test_file_and_command_sources(tmp_path):
    f = tmp_path / "key"
    f.write_text("file-key-abcdefghijklmnop\n")
    assert KeySource(file=str(f)).read().reveal() == "file-key-abcdefghijklmnop"
    assert KeySource(command=f"cat {f}").read().reveal() == "file-key-abcdefghijklmnop"
    with pytest.raises(UsageError, match="exited with 1"):
        KeySource(command="false").read()
    with pytest.raises(UsageError, match="not found"):
        KeySource(command="/nonexistent/helper").read()
