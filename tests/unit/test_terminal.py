"""What the sandbox's output may do to a terminal (launcher/run/terminal.py), and names shown escaped."""

from __future__ import annotations

import pytest

from qsandbox.common.text import shown
from qsandbox.launcher.run.terminal import ControlFilter, end_line


def filtered(*chunks: bytes) -> bytes:
    f = ControlFilter()
    return b"".join(f.feed(c) for c in chunks) + f.flush()


@pytest.mark.parametrize(
    ("raw", "seen"),
    [
        (b"plain text\n\ttabbed\n", b"plain text\n\ttabbed\n"),
        (b"\x1b[31mred\x1b[0m \x1b[1;38;5;200mbold\x1b[m", b"\x1b[31mred\x1b[0m \x1b[1;38;5;200mbold\x1b[m"),
        (b"\x1b]52;c;ZWNobyBwd25lZA==\x07after", b"after"),  # clipboard write
        (b"\x1b]0;title\x1b\\after", b"after"),  # window title, ST-terminated
        (b"\r\x1b[2Kforged\x1b[1A\x1b[Hx", b"forgedx"),  # carriage return, erase, cursor moves
        (b"\x1b[8mconcealed\x1b[5mblink", b"concealedblink"),  # SGR that hides or blinks
        (b"a\x08\x07\x00\x7fb", b"ab"),  # backspace, bell, NUL, DEL
        ("c1\u009b2Jcsi\u0090dcs".encode(), b"c12Jcsidcs"),  # C1 controls, UTF-8 encoded
        (b"\x1bPdcs string never ends", b""),  # an unterminated string is dropped, not held
        ("caf\u00e9 \u2019quoted\u2019".encode(), "caf\u00e9 \u2019quoted\u2019".encode()),  # text is text
    ],
)
def test_only_text_newlines_tabs_and_colours_pass(raw, seen):
    assert filtered(raw) == seen
    assert filtered(*(raw[i : i + 1] for i in range(len(raw)))) == seen  # byte by byte: the same


def test_an_endless_escape_string_costs_no_memory():
    f = ControlFilter()
    f.feed(b"\x1b]52;c;")
    for _ in range(100):
        assert f.feed(b"A" * 100_000) == b""
    assert f.feed(b"\x07ok") == b"ok"


def test_end_line_resets_colours_and_starts_a_line_only_when_needed():
    f = ControlFilter()
    f.feed(b"\x1b[31mno newline at the end")
    assert end_line(f.last) == b"\x1b[0m\n"
    f.feed(b"done\n")
    assert end_line(f.last) == b"\x1b[0m"


def test_shown_escapes_what_a_terminal_would_act_on():
    assert shown("plain name.txt") == "plain name.txt"
    assert shown("a\x1b]52;c;x\x07b") == "a\\x1b]52;c;x\\x07b"
    assert shown("evil\u202etxt.exe\n") == "evil\\u202etxt.exe\\x0a"
