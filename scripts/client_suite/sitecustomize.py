"""Loaded by the client suite's Python (``PYTHONPATH``): send IBM Cloud host names to the emulator.

The client always derives ``https://<service>.cloud.ibm.com`` (port 443) from its ``url``, so the
suite's connections to ``*.cloud.ibm.com:443`` are opened to ``127.0.0.1:$QSANDBOX_SUITE_PORT``
instead, at the socket level only: TLS still checks the real host name, against the emulator's CA
(``REQUESTS_CA_BUNDLE``). Nothing else is redirected, so a missed host fails instead of leaking.

The suite's proxy tests start ``pproxy`` (an asyncio HTTP proxy) with this same environment: its
outgoing connections to those hosts go the same way, through asyncio's ``create_connection``.
"""

from __future__ import annotations

import os

_PORT = int(os.environ.get("QSANDBOX_SUITE_PORT", "0") or 0)

if _PORT:
    import urllib3.util.connection as _conn

    _original = _conn.create_connection

    def _ibm(host, port):  # type: ignore[no-untyped-def]
        return (host == "cloud.ibm.com" or str(host).endswith(".cloud.ibm.com")) and str(port) == "443"

    def _create_connection(address, *args, **kwargs):  # type: ignore[no-untyped-def]
        host, port = address
        if _ibm(host, port):
            address = ("127.0.0.1", _PORT)
        return _original(address, *args, **kwargs)

    _conn.create_connection = _create_connection  # urllib3.connection calls it through the module

    import asyncio.base_events as _events

    _original_async = _events.BaseEventLoop.create_connection

    async def _async_create_connection(self, protocol_factory, host=None, port=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _ibm(host, port):
            host, port = "127.0.0.1", _PORT
        return await _original_async(self, protocol_factory, host, port, *args, **kwargs)

    _events.BaseEventLoop.create_connection = _async_create_connection
