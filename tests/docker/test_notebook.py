"""`qsandbox run NOTEBOOK.ipynb`: executed in the sandbox by a kernel from the image's Python, over
Unix sockets only, each cell's output streamed (and masked) as it runs, the executed notebook
delivered through /output, and a failing cell ending the run with exit 1 and its name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from helpers import qsandbox


def notebook(path, *sources: str) -> str:
    cells: list[dict[str, object]] = [{"cell_type": "markdown", "metadata": {}, "source": "# made by the test"}]
    cells += [
        {"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None} for s in sources
    ]
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    path.write_text(json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))
    return str(path)


BELL = """\
from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import QiskitRuntimeService
from qiskit_ibm_runtime.executor_sampler import Sampler
backend = QiskitRuntimeService().least_busy(operational=True, simulator=False)
qc = QuantumCircuit(2)
qc.h(0); qc.cx(0, 1); qc.measure_all()
isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
counts = Sampler(mode=backend).run([isa], shots=1000).result()[0].data.meas.get_counts()
print("counts:", dict(sorted(counts.items())))"""

# Every socket in LISTEN state, from the kernel's own network namespace view.
LISTENERS = """\
import sys
def listening(name):
    rows = open(f"/proc/net/{name}").read().splitlines()[1:]
    return [r.split()[1] for r in rows if r.split()[3] == "0A"]
def loopback(address):  # little-endian hex: 127.0.0.0/8 (Docker's resolver is 127.0.0.11), or ::1
    host = address.split(":")[0]
    return host[6:8] == "7F" if len(host) == 8 else host == "00000000000000000000000001000000"
found = listening("tcp") + listening("tcp6")
print("kernel:", sys.executable)
print("listening:", len(found), "beyond loopback:", [a for a in found if not loopback(a)])"""

SHOW_KEY = "import os\nprint('key:', open(os.environ['QISKIT_IBM_TOKEN_FILE']).read().strip())"


def test_bell_notebook_runs_in_the_images_kernel_and_comes_back_executed(image, canary, tmp_path):
    path = notebook(tmp_path / "analysis.ipynb", LISTENERS, BELL, SHOW_KEY, "counts.get('00', 0) + counts.get('11', 0)")
    out = tmp_path / "results"
    done = qsandbox("run", "--platform", "local", "--token-stdin", "--output", str(out), path, input=canary + "\n")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kernel: /opt/qsandbox/bin/python" in done.stdout
    assert "beyond loopback: []" in done.stdout
    assert "counts: {'00': " in done.stdout
    assert "key: ***" in done.stdout and canary not in done.stdout + done.stderr  # masked like a script's output
    executed = json.loads((out / "analysis.ipynb").read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == [1, 2, 3, 4]
    assert int("".join(code[3]["outputs"][0]["data"]["text/plain"])) > 800  # the Bell pair: 00 + 11
    assert canary not in json.dumps(executed)


def test_failing_cell_ends_the_run_naming_it_after_streaming_what_came_before(image, tmp_path, popen):
    path = notebook(
        tmp_path / "broken.ipynb",
        "print('first cell done', flush=True)",
        "import time\ntime.sleep(4)",
        "1 / 0",
        "print('never printed')",
    )
    out = tmp_path / "results"
    began = time.monotonic()
    proc = popen(
        [sys.executable, "-m", "qsandbox", "run", "--platform", "local", "--output", str(out), path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM")},
    )
    first_line = proc.stdout.readline()
    first_at = time.monotonic() - began
    rest, err = proc.communicate(timeout=300)
    ended_at = time.monotonic() - began
    assert proc.returncode == 1, err[-3000:]
    assert first_line == "first cell done\n"
    assert ended_at - first_at > 3  # the first cell's output arrived while the notebook still ran
    assert "never printed" not in rest and "ZeroDivisionError" in err
    assert "qsandbox: the notebook stopped at code cell 3 (cell 4 of 5): ZeroDivisionError: division by zero" in err
    executed = json.loads((out / "broken.ipynb").read_text())
    assert executed["cells"][3]["outputs"][0]["ename"] == "ZeroDivisionError"
    assert executed["cells"][4]["outputs"] == []


def test_notebook_takes_no_arguments(tmp_path):
    done = qsandbox("run", "--platform", "local", notebook(tmp_path / "n.ipynb", "1"), "--flag")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "qsandbox: a notebook takes no arguments (got --flag): pass values in a file with --include"
    )


def test_iam_tokens_the_kernel_obtains_are_masked_in_the_stream_and_the_notebook(image, tmp_path):
    """Opaque refresh tokens match no pattern: only the kernel's token watch makes them known."""
    from helpers import ROOT

    source = (ROOT / "tests" / "scripts" / "print_tokens.py").read_text()
    path = notebook(tmp_path / "tokens.ipynb", source)
    out = tmp_path / "results"
    done = qsandbox("run", "--platform", "local", "--output", str(out), path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert lines["refresh length"] == "128 jwt-shaped: False"  # opaque: no pattern could find it
    assert lines["refresh"] == "***" and "***" in lines["refresh b64"]
    assert "access: ***" in done.stderr
    executed = (out / "tokens.ipynb").read_text()
    assert "refresh: ***" in executed and "access: ***" in executed and "refresh length: 128" in executed
    # positive control: without masking, the notebook holds the token the stream masked
    bare = qsandbox("run", "--platform", "local", "--no-redact", "--output", str(tmp_path / "bare"), path)
    assert bare.returncode == 0, bare.stderr[-3000:]
    token = dict(line.split(": ", 1) for line in bare.stdout.splitlines() if ": " in line)["refresh"]
    assert len(token) == 128 and f"refresh: {token}" in (tmp_path / "bare" / "tokens.ipynb").read_text()


# Cells that print the key in pieces: a viewer joins them, so the executed notebook must not hold
# them whole in separate outputs (the terminal, one stream, masks what one stream of it shows).
KEY_CELL = "import base64, os, sys, time\nk = open(os.environ['QISKIT_IBM_TOKEN_FILE']).read().strip()"
IN_PIECES = {
    "two": "print('two:', k[:20], end='', flush=True)\nprint(k[20:])",
    "three": (
        "sys.stdout.write('three: ' + k[:7]); sys.stdout.flush(); time.sleep(0.4)\n"
        "sys.stdout.write(k[7:30]); sys.stdout.flush(); time.sleep(0.4)\nprint(k[30:])"
    ),
    "result": (
        "class Tail:\n    def __repr__(self):\n        return k[20:]\n"
        "print('result:', k[:20], end='', flush=True)\nTail()"
    ),
    "cells": "print('cells:', k[:20], end='', flush=True)",  # the next cell prints the rest
    "b64": "b = base64.b64encode(k.encode()).decode()\nprint('b64:', b[:13], end='', flush=True)\nprint(b[13:])",
    # Only in the notebook, not on the terminal (README): stdout then stderr, tags, colours between.
    "mixed": "print('mixed:', k[:20], end='', flush=True)\nprint(k[20:], file=sys.stderr, flush=True)",
    "html": "from IPython.display import HTML, display\ndisplay(HTML(f'<b>{k[:20]}</b>{k[20:]}'))",
    "colour": "print(f'colour: {k[:20]}\\x1b[31m{k[20:]}\\x1b[0m')",
}


def viewer_texts(executed: dict) -> list[str]:
    """The outputs as viewers show them, one after another (streams of both names, each rich
    output as text/plain, or as text/html with its tags dropped, tracebacks), escapes dropped."""
    import html
    import re

    outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    texts = []
    for prefer in ("text/plain", "text/html"):
        parts = []
        for o in outputs:
            data = o.get("data", {})
            kind = prefer if prefer in data else "text/plain"
            value = o.get("text") or data.get(kind) or o.get("traceback") or ""
            value = "".join(value) if isinstance(value, list) else value
            parts.append(html.unescape(re.sub("<[^>]*>", "", value)) if kind == "text/html" else value)
        texts.append(re.sub(r"\x1b\[[0-9;]*m", "", "".join(parts)))
    return texts


def test_a_key_printed_in_pieces_is_masked_in_the_executed_notebook(image, canary, tmp_path):
    from qsandbox.common.redact import forms

    cells, at = [KEY_CELL], {}
    for name, source in IN_PIECES.items():
        at[name] = [len(cells)]  # index among the code cells
        cells.append(source)
        if name == "cells":
            at[name].append(len(cells))
            cells.append("print(k[20:])")
    path = notebook(tmp_path / "pieces.ipynb", *cells)
    # Positive control: unmasked, each way of printing leaves the key in the notebook as viewers join it.
    bare = qsandbox("run", "--platform", "local", "--token-stdin", "--no-redact", "--output", str(tmp_path / "bare"),
                    path, input=canary + "\n")  # fmt: skip
    assert bare.returncode == 0, bare.stderr[-3000:]
    executed = json.loads((tmp_path / "bare" / "pieces.ipynb").read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    for name, indices in at.items():
        alone = {"cells": [code[i] for i in indices]}
        assert any(f in t.encode() for t in viewer_texts(alone) for f in forms(canary)), (name, alone)
        assert not any(f in json.dumps(alone).encode() for f in forms(canary)), name  # no one string holds it

    out = tmp_path / "results"
    done = qsandbox("run", "--platform", "local", "--token-stdin", "--output", str(out), path, input=canary + "\n")
    assert done.returncode == 0, done.stderr[-3000:]
    raw = (out / "pieces.ipynb").read_bytes()
    executed = json.loads(raw)
    places = {"file": raw, **{f"viewer {i}": t.encode() for i, t in enumerate(viewer_texts(executed))}}
    for n, cell in enumerate(c for c in executed["cells"] if c["cell_type"] == "code"):
        places |= {f"cell {n} {i}": t.encode() for i, t in enumerate(viewer_texts({"cells": [cell]}))}
    assert {p: [f for f in forms(canary) if f in data] for p, data in places.items()} == {p: [] for p in places}
    assert "***" in viewer_texts(executed)[1]
    # The terminal, one stream a side, masked what one stream showed.
    lines = done.stdout.splitlines()
    for name in ("two", "three", "result", "cells", "b64"):
        assert f"{name}: ***" in lines, (name, done.stdout)
    for stream in (done.stdout, done.stderr):
        assert [f for f in forms(canary) if f.decode() in stream] == []
