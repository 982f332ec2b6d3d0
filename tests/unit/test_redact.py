from __future__ import annotations

import base64
import random
import urllib.parse

import pytest
from helpers import new_canary

from qsandbox.common.redact import MASK, Redactor, forms

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQtb2YtdGhlLWp3dA"


def run(redactor: Redactor, chunks: list[bytes]) -> bytes:
    return b"".join(redactor.feed(c) for c in chunks) + redactor.flush()


def leaks(out: bytes, key: str) -> bool:
    return any(f in out for f in forms(key))


@pytest.mark.parametrize("split", ["whole", "bytes", "random"])
def test_literal_base64_urlencoded_and_jwt_are_masked_across_chunks(split):
    key = new_canary() + "+/="  # characters that URL-encoding changes
    text = (
        f"key={key}\n"
        f"b64={base64.b64encode(key.encode()).decode()}\n"
        f"b64-shifted1={base64.b64encode(b'x' + key.encode()).decode()}\n"
        f"b64-shifted2={base64.b64encode(b'xy' + key.encode()).decode()}\n"
        f"b64url-shifted1={base64.urlsafe_b64encode(b'x' + key.encode()).decode()}\n"
        f"url={urllib.parse.quote(key, safe='')}\n"
        f"Authorization: Bearer {JWT}\n"
        "the end\n"
    ).encode()
    if split == "whole":
        chunks = [text]
    elif split == "bytes":
        chunks = [text[i : i + 1] for i in range(len(text))]
    else:
        rng = random.Random(7)
        chunks, i = [], 0
        while i < len(text):
            n = rng.randint(1, 9)
            chunks.append(text[i : i + n])
            i += n
    out = run(Redactor([key]), chunks)
    assert not leaks(out, key)
    assert JWT.encode() not in out and b"eyJzdWIiOiJ4In0" not in out
    assert out.count(MASK) >= 7
    assert out.endswith(b"the end\n")
    assert b"Authorization: Bearer ***" in out


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_each_base64_alignment_alone_is_masked(shift):
    """The key's base64 at each of the three alignments, each on its own (and its base64url)."""
    key = new_canary() + "+/="
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = b"before " + encode(b"p" * shift + key.encode()) + b" after\n"
        out = run(Redactor([key]), [text[i : i + 3] for i in range(0, len(text), 3)])
        assert not leaks(out, key), (shift, encode.__name__, out)
        assert MASK in out and out.endswith(b" after\n")
        unmasked = run(Redactor([new_canary()]), [text])  # the control: another key masks nothing
        assert unmasked == text


def test_ordinary_output_passes_unchanged_and_live():
    r = Redactor([new_canary()])
    assert r.feed(b'counts: {"00": 512}\n') == b'counts: {"00": 512}\n'
    assert r.feed(b"progress 10%") == b"progress 10%"


def test_prefix_of_the_key_is_held_back_until_decided():
    key = new_canary()
    r = Redactor([key])
    assert r.feed(b"x " + key[:10].encode()) == b"x "
    assert r.feed(b" not the key\n") == key[:10].encode() + b" not the key\n"


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_the_whole_base64_run_holding_the_key_is_masked(shift):
    """No characters of the neighbours' encoding are left around the mask (was `YWNj***ZA==`)."""
    key = new_canary()
    encoded = base64.b64encode(b"acc" * shift + b"acc" + key.encode() + b"zz")
    text = b"before " + encoded + b" after\n"
    for size in (1, 3, len(text)):
        out = run(Redactor([key]), [text[i : i + size] for i in range(0, len(text), size)])
        assert out == b"before *** after\n", (size, out)
    assert run(Redactor([new_canary()]), [text]) == text  # the control: another key masks nothing


def test_a_long_base64_run_without_the_key_passes_quickly_and_whole():
    data = base64.b64encode(random.randbytes(48000)) + b"\n"
    r = Redactor([new_canary()])
    assert run(r, [data[i : i + 4096] for i in range(0, len(data), 4096)]) == data


def test_mask_a_closing_line():
    key = new_canary()
    assert Redactor([key]).mask(f"refused {key}.evil.test:443 x1") == "refused ***.evil.test:443 x1"


@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_the_key_in_hex_is_masked_as_in_a_made_up_host_name(case):
    key = new_canary()
    host = f"exfil{case(key.encode().hex())}.quantum.cloud.ibm.com:443"
    out = run(Redactor([key]), [f"CONNECT {host}\n".encode()[i : i + 7] for i in range(0, 200, 7)])
    assert not leaks(out, key) and key.encode().hex() not in out.decode().lower()
    assert out == b"CONNECT exfil***.quantum.cloud.ibm.com:443\n"
    assert Redactor([key]).mask(host) == "exfil***.quantum.cloud.ibm.com:443"
