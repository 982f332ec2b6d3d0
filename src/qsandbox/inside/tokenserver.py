"""Short-lived mode, inside the sandbox: a local IAM token endpoint for the unchanged client.

The client exchanges "its key" at `$IAM_URL/identity/token` (qiskit-ibm-runtime honours IAM_URL
for every IAM call). Here the saved key is a meaningless placeholder and IAM_URL points at this
server on 127.0.0.1, which answers every exchange with the access token the launcher minted on
the host side and refreshes over the hand-off stream. The API key itself never enters the sandbox.
The standard library's server is enough for one loopback endpoint and keeps the entry point small.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..common.handoff import AccessToken
from ..common.paths import TOKEN_SERVER_PORT


class TokenServer:
    def __init__(self, first: AccessToken) -> None:
        self._token = first
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path.rstrip("/") != "/identity/token":
                    self.send_error(404)
                    return
                body = json.dumps(owner.response()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:  # never log requests: they carry tokens
                pass

        # Bound now (requests wait in the backlog), served from start(): the entry point forks the
        # script in between, and forking is only safe while this process has a single thread.
        self._server = ThreadingHTTPServer(("127.0.0.1", TOKEN_SERVER_PORT), Handler)

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def update(self, token: AccessToken) -> None:
        with self._lock:
            self._token = token

    def response(self) -> dict[str, object]:
        with self._lock:
            token = self._token
        return {
            "access_token": token.access_token,
            "refresh_token": "not-available-in-short-lived-mode",
            "token_type": "Bearer",
            "expires_in": max(0, token.expiration - int(time.time())),
            "expiration": token.expiration,
        }
