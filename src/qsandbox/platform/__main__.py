"""``python -m qsandbox.platform serve``: run the emulated platform.

TLS material is made fresh in memory for each start; only the CA certificate is written out
(``--ca-out``), for the script side to trust. uvicorn loads certificate and key from files, so
they are written to a private temporary directory (meant to be on a tmpfs) and removed as soon
as the TLS context is built. ``qsandbox-platform ready`` is printed once the socket listens.

Binding port 443 needs root or CAP_NET_BIND_SERVICE; ``--port`` picks another port when the
container maps 443 to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import socket
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import uvicorn
from pydantic.warnings import UnsupportedFieldAttributeWarning

from ..common.platform_constants import HOSTNAMES
from .tls import make_tls

READY_LINE = "qsandbox-platform ready"


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(READY_LINE, flush=True)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def serve(args: argparse.Namespace) -> int:
    # FastAPI silences this pydantic warning with a process-global catch_warnings() that the
    # warm-up thread (qiskit's own catch_warnings) can undo mid-request: the warning is known
    # noise, so it is ignored for the whole process rather than raced for.
    warnings.filterwarnings("ignore", category=UnsupportedFieldAttributeWarning)
    from .app import PlatformConfig, create_app  # Qiskit and Aer: not needed for --help

    platform_config = PlatformConfig.from_env()
    if args.queue_time is not None:
        platform_config = dataclasses.replace(platform_config, queue_time=args.queue_time)
    app = create_app(platform_config)
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "access_log": False,
        "lifespan": "on",
    }
    config: uvicorn.Config
    if args.plain:
        config = uvicorn.Config(app, **common)
        config.load()
    else:
        tls = make_tls([*HOSTNAMES, "localhost"])
        ca_out = Path(args.ca_out)
        ca_out.parent.mkdir(parents=True, exist_ok=True)
        ca_out.write_bytes(tls.ca_cert_pem)
        if args.print_ca:
            # The launcher reads this over attach: with the `none` log driver nothing is stored.
            sys.stdout.write(tls.ca_cert_pem.decode())
            sys.stdout.flush()
        workdir = Path(tempfile.mkdtemp(prefix="qsandbox-tls-", dir="/tmp"))
        try:
            cert, key = workdir / "server.pem", workdir / "server.key"
            _write_private(cert, tls.server_cert_pem)
            _write_private(key, tls.server_key_pem)
            config = uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=str(key), **common)
            config.load()  # builds the SSL context; the files are not needed afterwards
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.exit_on_stdin_eof:
        threading.Thread(target=_exit_on_eof, daemon=True).start()
    _Server(config).run()
    return 0


def _exit_on_eof() -> None:
    """Dead-man switch: the launcher holds our stdin; when it goes away, so do we."""
    while os.read(0, 4096):
        pass
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qsandbox.platform")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the emulated IBM Quantum Platform")
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104 - it serves a container network
    # The CA certificate is public; /tmp is a tmpfs in the container.
    p.add_argument(
        "--ca-out",
        default="/tmp/qsandbox-ca.pem",  # noqa: S108
        help="where to write the per-run CA certificate (PEM)",
    )
    p.add_argument(
        "--print-ca", action="store_true", help="also print the CA certificate (PEM) on stdout before the ready line"
    )
    p.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="exit at once when stdin reaches EOF (the launcher went away)"
    )
    p.add_argument(
        "--queue-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help=(
            "keep each job Queued for 3/4 of SECONDS, then Running for at least the rest, as on a busy "
            "device (default: QSANDBOX_PLATFORM_QUEUE_TIME, else 0)"
        ),
    )
    p.add_argument("--plain", action="store_true", help="serve plain HTTP (debugging only)")
    p.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
