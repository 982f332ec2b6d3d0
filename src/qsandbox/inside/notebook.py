"""Inside the sandbox, in the script's process: execute a Jupyter notebook cell by cell.

The kernel is the image's own Python (`qsandbox.inside.kernel`, ipykernel), whatever kernel the
notebook names, talking to this process over Unix sockets in a tmpfs (transport ipc): nothing
listens on any network interface. Every Jupyter and IPython directory is under /tmp, since the
root file system is read-only. Each cell's output is written to stdout/stderr as it arrives, so it
streams out through the same masking as a script's output; the executed notebook is written to
/output with the same masking applied to every string in it (the key in its forms, anything
JWT-shaped, and the IAM tokens the kernel's client obtained, which the kernel reports on a pipe this
process reads and passes on). A failing cell ends the run with exit code 1 and names the cell.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import sys
import threading
import warnings
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from ..common.paths import OUTPUT_DIR, TOKEN_FILE
from ..common.redact import MASK, Redactor

JUPYTER = Path("/tmp/qsandbox-jupyter")  # noqa: S108 - the sandbox's private tmpfs
KERNEL_NAME = "qsandbox"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


KERNEL_ARGV = [sys.executable, "-m", "qsandbox.inside.kernel", "-f", "{connection_file}"]


def point_jupyter_at_tmpfs() -> None:
    """Every Jupyter and IPython directory under the tmpfs (the root file system is read-only)."""
    dirs = {
        "JUPYTER_RUNTIME_DIR": JUPYTER / "runtime",
        "JUPYTER_DATA_DIR": JUPYTER / "data",
        "JUPYTER_CONFIG_DIR": JUPYTER / "config",
        "IPYTHONDIR": JUPYTER / "ipython",
        "MPLCONFIGDIR": JUPYTER / "matplotlib",
    }
    for name, path in dirs.items():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ[name] = str(path)
    os.environ["JUPYTER_PATH"] = str(JUPYTER / "data")
    os.environ["JUPYTER_PLATFORM_DIRS"] = "1"  # the new layout, and no warning about the old one


def register_kernel(name: str, display_name: str) -> None:
    """The image's Python with the IAM token watch (`qsandbox.inside.kernel`) as kernel `name`."""
    import json

    spec = JUPYTER / "data" / "kernels" / name
    spec.mkdir(parents=True, exist_ok=True)
    argv = [*KERNEL_ARGV, "--HistoryManager.enabled=False"]  # no history database: nothing of the run kept
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": display_name, "language": "python"}))


def _prepare_environment() -> None:
    """Point Jupyter and IPython at the tmpfs and register the image's kernel under KERNEL_NAME."""
    point_jupyter_at_tmpfs()
    register_kernel(KERNEL_NAME, "qsandbox (the image's Python)")


def _text(output: dict[str, Any]) -> tuple[int, str]:
    """(1 for stdout or 2 for stderr, text) for one output as it arrives."""
    kind = output.get("output_type")
    if kind == "stream":
        return (2 if output.get("name") == "stderr" else 1), str(output.get("text", ""))
    if kind in ("execute_result", "display_data"):
        data = output.get("data", {})
        if "text/plain" in data:
            return 1, str(data["text/plain"]).rstrip("\n") + "\n"
        return 1, f"[{', '.join(sorted(data))}]\n"
    if kind == "error":
        return 2, _ANSI.sub("", "\n".join(output.get("traceback", []))) + "\n"
    return 1, ""


# -- the executed notebook, masked as a viewer shows it -------------------------------------------
#
# A viewer joins what the kernel sent in pieces: the stream outputs of a cell (one print may arrive
# as two messages, and `print(k[:20], end="", flush=True)` makes two on purpose), a stream and the
# result after it, the lines of a multiline field (a list of strings in the file). Masking each
# string alone would leave a key printed in pieces whole on the screen of whoever opens the file,
# while the terminal, one stream, showed ***. So the outputs of the whole notebook, in order, are
# joined as one text (cells too: the terminal's stream runs across them), a match in it is masked
# in every piece it touches (the mask in the first, the rest removed), and that is done once per
# representation a viewer may choose for a rich output (text/html where there is one, else
# text/plain, ...), each both as the raw strings and as shown: terminal escapes and other control
# characters take no room (a viewer renders colours), nor do tags in HTML, SVG and Markdown, whose
# character references count as the characters they show. Every string is masked alone first, and
# the strings of every list on their joined text. What a viewer makes of carriage returns and
# backspaces (overwriting), of Markdown's own syntax or of a picture is not modelled: masking
# guards against printing by mistake (README, "Redaction").

_ESCAPE = r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]*[0-~]?)"  # as terminal.py reads them
_CONTROLS = _ESCAPE + r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
_UNSHOWN = re.compile(_CONTROLS)
_TAG = r"<!--.*?(?:-->|\Z)|<[A-Za-z/!?][^>]*>?"
_REF = r"(?P<ref>&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);?)"
_UNSHOWN_MARKUP = re.compile(f"{_CONTROLS}|{_TAG}|{_REF}", re.S)
_MARKUP = frozenset({"text/html", "image/svg+xml", "text/markdown"})
_MASK = MASK.decode()


@dataclass(frozen=True)
class _Piece:
    """Text a viewer shows, and where it comes from: `holder[key][start:end]` (None: a separator)."""

    shown: str
    holder: Any
    key: Any
    start: int
    end: int
    plain: bool = True  # shown is exactly that slice (else a character reference: masked whole)


def masked(nb: Any, redactor: Redactor) -> Any:
    """A copy of the notebook `nb` to write to /output: masked as a viewer shows it (see above)."""
    copy = _each(nb, redactor)
    outputs = [o for c in copy.get("cells") or [] if isinstance(c, dict) for o in c.get("outputs") or []]
    outputs = [o for o in outputs if isinstance(o, dict)]
    mimes = {m for o in outputs if isinstance(o.get("data"), dict) for m in o["data"]}
    for mime in sorted(mimes | {"text/plain"}):
        for shown in (False, True):
            _mask_joined(_view(outputs, mime, shown), redactor)
    return copy


def _each(value: Any, redactor: Redactor) -> Any:
    """A copy of `value`, every string in it masked alone, and the strings of each list on their
    joined text (a multiline field)."""
    if isinstance(value, str):
        return redactor.mask(value)
    if isinstance(value, list):
        items = [_each(v, redactor) for v in value]
        _mask_joined([p for i, v in enumerate(items) if isinstance(v, str) for p in _pieces(items, i, None)], redactor)
        return items
    if isinstance(value, dict):
        return type(value)({k: _each(v, redactor) for k, v in value.items()})
    return value


def _view(outputs: list[dict[str, Any]], mime: str, shown: bool) -> list[_Piece]:
    """The outputs' text one after another, as a viewer that prefers `mime` shows it."""
    pieces: list[_Piece] = []
    unshown = _UNSHOWN if shown else None
    for out in outputs:
        data = out.get("data")
        if out.get("output_type") == "stream":
            pieces += _field(out, "text", unshown)
        elif out.get("output_type") == "error" and isinstance(out.get("traceback"), list):
            for i, line in enumerate(out["traceback"]):
                if isinstance(line, str):
                    pieces += [*_pieces(out["traceback"], i, unshown), _Piece("\n", None, None, 0, 0)]
        elif isinstance(data, dict):
            key = mime if mime in data else "text/plain"
            pieces += _field(data, key, _UNSHOWN_MARKUP if shown and key in _MARKUP else unshown)
    return pieces


def _field(holder: dict[str, Any], key: str, unshown: re.Pattern[str] | None) -> list[_Piece]:
    """A text field: a string, or a list of strings joined (nbformat's multiline strings)."""
    value = holder.get(key)
    if isinstance(value, str):
        return _pieces(holder, key, unshown)
    if isinstance(value, list):
        return [p for i, v in enumerate(value) if isinstance(v, str) for p in _pieces(value, i, unshown)]
    return []


def _pieces(holder: Any, key: Any, unshown: re.Pattern[str] | None) -> list[_Piece]:
    text: str = holder[key]
    if unshown is None:
        return [_Piece(text, holder, key, 0, len(text))] if text else []
    pieces, pos = [], 0
    for m in unshown.finditer(text):
        if m.start() > pos:
            pieces.append(_Piece(text[pos : m.start()], holder, key, pos, m.start()))
        if m.lastgroup == "ref" and (char := html.unescape(m.group())) != m.group():
            pieces.append(_Piece(char, holder, key, m.start(), m.end(), plain=False))
        elif m.lastgroup == "ref":
            pieces.append(_Piece(m.group(), holder, key, m.start(), m.end()))
        pos = m.end()
    if pos < len(text):
        pieces.append(_Piece(text[pos:], holder, key, pos, len(text)))
    return pieces


def _mask_joined(pieces: list[_Piece], redactor: Redactor) -> None:
    """Mask, in place, every match of the pieces' joined text in each piece it touches."""
    if len(pieces) < 2:
        return  # a string alone is already masked
    starts = list(accumulate((len(p.shown) for p in pieces), initial=0))
    edits: dict[tuple[int, Any], list[tuple[int, int, str]]] = {}
    holders: dict[tuple[int, Any], Any] = {}
    for begin, end in redactor.spans("".join(p.shown for p in pieces)):
        i, mask = bisect_right(starts, begin) - 1, _MASK
        while i < len(pieces) and starts[i] < end:
            p = pieces[i]
            if p.holder is not None:
                lo, hi = (p.start + max(begin - starts[i], 0), p.start + min(end - starts[i], len(p.shown)))
                ref = (id(p.holder), p.key)
                holders[ref] = p.holder
                edits.setdefault(ref, []).append((lo, hi, mask) if p.plain else (p.start, p.end, mask))
                mask = ""
            i += 1
    for ref, changes in edits.items():
        holder, key = holders[ref], ref[1]
        text, pos, out = holder[key], 0, []
        for lo, hi, mask in sorted(changes):
            lo = max(lo, pos)  # two matches in one character reference
            out += [text[pos:lo], mask]
            pos = max(pos, hi)
        holder[key] = "".join(out) + text[pos:]


def _tee_tokens(upstream: int, redactor: Redactor) -> int:
    """A pipe for the kernel's token reports: each is masked here and passed on to `upstream`."""
    read_end, write_end = os.pipe()

    def copy() -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            os.write(upstream, chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                redactor.add(line.decode(errors="replace"))

    threading.Thread(target=copy, daemon=True).start()
    return write_end


def run(path: str) -> int:
    """Execute the notebook at `path`; write it, executed, to /output; return the exit code."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbformat.warnings import MissingIDFieldWarning

    _prepare_environment()
    # Notebooks from before nbformat 4.5 have no cell ids: reading gives them ids, as Jupyter does
    # on open, with a warning addressed to a notebook's author, not to whoever runs it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingIDFieldWarning)
        nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]  # nbformat is untyped
    failed: list[int] = []

    class _Streaming(NotebookClient):
        def output(self, outs: Any, msg: Any, display_id: Any, cell_index: int) -> Any:
            out = super().output(outs, msg, display_id, cell_index)
            if out is not None:
                fd, text = _text(out)
                stream = sys.stderr if fd == 2 else sys.stdout
                stream.write(text)
                stream.flush()
            return out

    def on_error(cell: Any, cell_index: int, execute_reply: Any) -> None:
        failed.append(cell_index)

    client = _Streaming(
        nb,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": os.path.dirname(path)}},  # the kernel's cwd: the notebook's dir
        on_cell_error=on_error,
    )
    client.km = client.create_kernel_manager()
    client.km.transport = "ipc"  # Unix sockets under JUPYTER_RUNTIME_DIR, no TCP port at all
    client.km.ip = str(JUPYTER / "runtime" / "kernel")
    redactor = Redactor([])
    upstream = os.environ.get("QSANDBOX_TOKEN_FD")  # set only when output is masked (not --no-redact)
    if upstream:
        with contextlib.suppress(OSError):  # no key file: short-lived mode's placeholder is not a secret
            redactor.add(Path(str(TOKEN_FILE)).read_text().strip())
        os.environ["QSANDBOX_TOKEN_FD"] = str(_tee_tokens(int(upstream), redactor))
    code = 0
    try:
        client.execute(pass_fds=(int(os.environ["QSANDBOX_TOKEN_FD"]),) if upstream else ())
    except CellExecutionError as e:
        index = failed[-1] if failed else -1
        number = sum(1 for c in nb.cells[: index + 1] if c.cell_type == "code")
        print(
            f"qsandbox: the notebook stopped at code cell {number} (cell {index + 1} of {len(nb.cells)}): "
            f"{e.ename}: {e.evalue}",
            file=sys.stderr,
        )
        code = 1
    finally:
        name = os.path.basename(path)
        try:
            executed = masked(nb, redactor) if upstream else nb
            nbformat.write(executed, os.path.join(str(OUTPUT_DIR), name))  # type: ignore[no-untyped-call]
        except OSError as e:
            print(f"qsandbox: the executed notebook could not be written to {OUTPUT_DIR}: {e}", file=sys.stderr)
            code = code or 1
    return code
