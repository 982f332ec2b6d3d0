"""The executed notebook is masked as a viewer shows it: a key the kernel sent in pieces (two
stream outputs, a stream and a result, a multiline field, markup between its halves) is masked in
every piece, not only where one string holds it whole."""

from __future__ import annotations

import base64
import copy
import html
import itertools
import json
import re

import pytest
from helpers import new_canary

from qsandbox.common.redact import Redactor, forms
from qsandbox.inside.notebook import masked


def stream(text: str | list[str], name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def result(data: dict, kind: str = "execute_result") -> dict:
    return {
        "output_type": kind,
        "data": data,
        "metadata": {},
        **({"execution_count": 1} if kind == "execute_result" else {}),
    }


def nb(*cells: list[dict]) -> dict:
    code = [
        {"cell_type": "code", "source": "", "metadata": {}, "outputs": list(o), "execution_count": 1} for o in cells
    ]
    return {"cells": code, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def viewed(notebook: dict) -> list[str]:
    """What viewers may show, each a different way: every output's text one after another (streams,
    each rich output as each of its types, tracebacks), with escapes dropped and, for markup, tags
    dropped and character references read. An implementation of its own, not the code under test."""
    outputs = [o for c in notebook["cells"] for o in c.get("outputs", [])]
    mimes = {m for o in outputs for m in o.get("data", {})} | {"text/plain"}
    texts = []
    for mime in sorted(mimes):
        for rendered in (False, True):
            parts = []
            for o in outputs:
                if o["output_type"] == "stream":
                    value, kind = o["text"], "text/plain"
                elif o["output_type"] == "error":
                    value, kind = "\n".join(o["traceback"]), "text/plain"
                else:
                    kind = mime if mime in o["data"] else "text/plain"
                    value = o["data"].get(kind, "")
                value = "".join(value) if isinstance(value, list) else value
                if rendered:
                    value = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|[\x00-\x08\x0b-\x1f]", "", value)
                    if kind in ("text/html", "image/svg+xml", "text/markdown"):
                        value = html.unescape(re.sub(r"<[^>]*>", "", value))
                parts.append(value)
            texts.append("".join(parts))
    return texts


def shows(notebook: dict, key: str) -> list[bytes]:
    """Forms of `key` in the file or in any way a viewer shows it."""
    places = [json.dumps(notebook).encode(), *(t.encode() for t in viewed(notebook))]
    return [f for f in forms(key) if any(f in p for p in places)]


def split(text: str, *at: int) -> list[str]:
    cuts = [0, *at, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(cuts)]


def cases(key: str) -> dict[str, dict]:
    b64 = base64.b64encode(key.encode()).decode()
    a, b = split(key, 20)
    return {
        "two writes": nb([stream("two: " + a), stream(b + "\n")]),
        "three writes": nb([stream("three: " + key[:7]), stream(key[7:30]), stream(key[30:] + "\n")]),
        "one character a write": nb([stream(c) for c in f"each: {key}\n"]),
        "stdout then stderr": nb([stream("mixed: " + a), stream(b + "\n", "stderr")]),
        "stream then result": nb([stream("out: " + a), result({"text/plain": b})]),
        "across cells": nb([stream(a)], [stream(b + "\n")]),
        "multiline field": nb([stream(["lines: " + a, b + "\n"])]),
        "result in two lines": nb([result({"text/plain": [a, b]})]),
        "html between tags": nb([result({"text/plain": "<HTML>", "text/html": f"<b>{a}</b><i>{b}</i>"})]),
        "html references": nb([result({"text/html": f"{a}&#{ord(b[0])};{b[1:]}", "text/plain": "x"}, "display_data")]),
        "html after a stream": nb([stream(a), result({"text/plain": "<HTML>", "text/html": f"<p>{b}</p>"})]),
        "colour between halves": nb([stream(f"colour: {a}\x1b[31m{b}\x1b[0m\n")]),
        "base64 in two writes": nb([stream("b64: " + b64[:13]), stream(b64[13:] + "\n")]),
        "traceback": nb([stream(a, "stderr"), {"output_type": "error", "ename": "E", "evalue": "", "traceback": [b]}]),
    }


@pytest.mark.parametrize("case", sorted(cases("x" * 44)))
def test_a_key_in_pieces_is_masked_as_viewers_show_it(case):
    key = new_canary()
    notebook = cases(key)[case]
    assert shows(notebook, key)  # positive control: the helper finds the key the pieces make
    before = copy.deepcopy(notebook)
    out = masked(notebook, Redactor([key]))
    assert shows(out, key) == []
    assert notebook == before  # a copy is masked; the kernel's notebook is left as it was
    assert any("***" in t for t in viewed(out))


def test_pieces_joined_read_as_the_terminal_reads_the_same_text():
    key = new_canary()
    for case, expected in (
        ("two writes", "two: ***\n"),
        ("three writes", "three: ***\n"),
        ("one character a write", "each: ***\n"),
    ):
        out = masked(cases(key)[case], Redactor([key]))
        text = "".join(o["text"] for o in out["cells"][0]["outputs"])
        assert text == expected == Redactor([key]).mask(text), case


def test_only_the_key_goes_and_the_outputs_keep_their_shape():
    """The mask where the key began, the rest of it removed; nothing else changes."""
    key = new_canary()
    a, b = split(key, 20)
    notebook = nb(
        [stream("before "), stream(a), stream(b), stream(" after\n"), stream("\x1b[1mbold\x1b[0m\n", "stderr")],
        [result({"text/plain": "42", "text/html": "<b>42</b> &amp; more"})],
    )
    out = masked(notebook, Redactor([key]))
    texts = [o.get("text") for o in out["cells"][0]["outputs"]]
    assert texts == ["before ", "***", "", " after\n", "\x1b[1mbold\x1b[0m\n"]
    assert out["cells"][1] == notebook["cells"][1]
    assert masked(notebook, Redactor([new_canary()])) == notebook  # another key: nothing changes


def test_metadata_and_other_strings_are_still_masked_alone_and_odd_text_passes():
    key = new_canary()
    notebook = nb([stream("\ud800 lone surrogate\n")])
    notebook["metadata"] = {"note": f"key {key}", "list": ["x", key[:10], key[10:]], "n": 3}
    out = masked(notebook, Redactor([key]))
    assert out["metadata"] == {"note": "key ***", "list": ["x", "***", ""], "n": 3}
    assert out["cells"][0]["outputs"][0]["text"] == "\ud800 lone surrogate\n"


def test_a_jwt_in_pieces_is_masked_too():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQtb2YtdGhlLWp3dA"
    out = masked(nb([stream("token " + jwt[:25]), stream(jwt[25:] + "\n")]), Redactor([]))
    assert "".join(o["text"] for o in out["cells"][0]["outputs"]) == "token ***\n"
