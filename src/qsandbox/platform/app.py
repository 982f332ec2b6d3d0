"""Wiring: one ASGI app answering for every emulated IBM Cloud host.

The client reaches several services on different host names, and two of them share a path
prefix (Global Catalog ``/api/v1/{id}`` and the Runtime API ``/api/v1/...``). ``HostDispatch``
therefore routes on the ``Host`` header first and, for hosts it does not know (``localhost``,
tests), on the path; each service's routes live under an internal prefix that no outside path
can reach directly.

Nothing answers without a token but IAM's token exchange: there is no health or admin view, since
a shared emulator's callers are different users (tests read its state through the API, with the
key that made it).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from . import cloud, iam, runtime
from .auth import Credentials
from .backends import Devices
from .config import PlatformConfig
from .errors import ApiError, handle_api_error
from .state import Store

__all__ = ["PlatformConfig", "create_app"]

_INTERNAL = "/_svc"

_HOST_PREFIXES = (
    ("iam.", "iam"),
    ("api.global-search-tagging.", "search"),
    ("globalcatalog.", "catalog"),
    ("resource-controller.", "controller"),
    ("quantum.", "quantum"),
)
_PATH_PREFIXES = (
    ("/identity/", "iam"),
    ("/v1/apikeys", "iam"),
    ("/v3/resources/", "search"),
    ("/v2/resource_instances", "controller"),
    ("/api/v1/", "quantum"),
)


def service_for(host: str, path: str) -> str:
    """Which emulated service a request is for (``"none"`` if no service matches)."""
    name = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host
    for prefix, service in _HOST_PREFIXES:
        if name.startswith(prefix) or (service == "quantum" and ".quantum." in name):
            return service
    for prefix, service in _PATH_PREFIXES:
        if path.startswith(prefix):
            return service
    return "none"


class HostDispatch:
    """Prefix the request path with its service's internal prefix."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            service = service_for(Headers(scope=scope).get("host", ""), scope["path"])
            prefix = f"{_INTERNAL}/{service}"
            scope = dict(scope)
            scope["path"] = prefix + scope["path"]
            scope["raw_path"] = prefix.encode() + scope.get("raw_path", b"")
        await self.app(scope, receive, send)


@dataclass
class Platform:
    """Everything the handlers share (``request.app.state.platform``)."""

    config: PlatformConfig
    credentials: Credentials
    devices: Devices
    store: Store


def create_app(config: PlatformConfig | None = None) -> FastAPI:
    config = config or PlatformConfig.from_env()
    platform = Platform(
        config=config,
        credentials=Credentials(config),
        devices=Devices(config.backends),
        store=Store(queue_time=config.queue_time),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=platform.devices.warm_up, name="qsandbox-warm-up", daemon=True).start()
        yield
        platform.store.shutdown()

    app = FastAPI(
        title="qsandbox emulated IBM Quantum Platform",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.platform = platform
    app.add_exception_handler(ApiError, handle_api_error)
    app.include_router(iam.router, prefix=f"{_INTERNAL}/iam")
    app.include_router(cloud.search_router, prefix=f"{_INTERNAL}/search")
    app.include_router(cloud.catalog_router, prefix=f"{_INTERNAL}/catalog")
    app.include_router(cloud.controller_router, prefix=f"{_INTERNAL}/controller")
    app.include_router(runtime.router, prefix=f"{_INTERNAL}/quantum")
    app.add_middleware(HostDispatch)
    return app
