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

import os
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from ..common.paths import OUTPUT_DIR, TOKEN_FILE
from ..common.redact import Redactor

JUPYTER = Path("/tmp/qsandbox-jupyter")  # noqa: S108 - the sandbox's private tmpfs
KERNEL_NAME = "qsandbox"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _prepare_environment() -> None:
    """Point Jupyter and IPython at the tmpfs and register the image's kernel under KERNEL_NAME."""
    import json

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
    spec = JUPYTER / "data" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "qsandbox.inside.kernel", "-f", "{connection_file}"]
    argv += ["--HistoryManager.enabled=False"]  # no history database: nothing of the run kept
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "qsandbox (the image's Python)", "language": "python"})
    )


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


def _masked(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, str):
        return redactor.mask(value)
    if isinstance(value, list):
        return [_masked(v, redactor) for v in value]
    if isinstance(value, dict):
        return type(value)({k: _masked(v, redactor) for k, v in value.items()})
    return value


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
        try:
            redactor.add(Path(str(TOKEN_FILE)).read_text().strip())
        except OSError:
            pass  # no key file: short-lived mode's placeholder is not a secret
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
            executed = _masked(nb, redactor) if upstream else nb
            nbformat.write(executed, os.path.join(str(OUTPUT_DIR), name))  # type: ignore[no-untyped-call]
        except OSError as e:
            print(f"qsandbox: the executed notebook could not be written to {OUTPUT_DIR}: {e}", file=sys.stderr)
            code = code or 1
    return code
