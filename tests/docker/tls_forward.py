"""A TLS front for the local engine's unix socket, for tests/docker/test_remote_engines.py.

    python tls_forward.py CERT_DIR UNIX_SOCKET

Serves mutual TLS on 127.0.0.1 (a free port, printed as the first line of stdout) with
CERT_DIR/{ca,cert,key}.pem, as `dockerd --tlsverify` does: a client without a certificate signed
by the CA is refused in the handshake. Every accepted connection is relayed to UNIX_SOCKET. EOF
from the client is passed on as a half-close (the engine's attach takes it as the end of stdin);
EOF from the engine ends the connection.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, half_close: bool) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if half_close and writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    except (OSError, ssl.SSLError):
        writer.close()


async def main(cert_dir: Path, target: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(cert_dir / "ca.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert_dir / "cert.pem", cert_dir / "key.pem")

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        engine_r, engine_w = await asyncio.open_unix_connection(target)
        try:
            await asyncio.gather(_pump(client_r, engine_w, True), _pump(engine_r, client_w, False))
        finally:
            engine_w.close()
            client_w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
