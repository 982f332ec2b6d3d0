"""Error bodies shaped like the real services', so client-side messages read the same."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse


class ProgramError(Exception):
    """Bad job input: the job fails with this message as its reason."""


class ApiError(Exception):
    """Raised anywhere in a handler; turned into ``status`` + JSON ``body`` by the app."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def platform_error(status: int, message: str, code: str = "") -> ApiError:
    """IBM Cloud platform style (Runtime API, IAM Identity, Search, Catalog, Controller)."""
    trace = uuid.uuid4().hex
    error = {"code": code or str(status), "message": message, "more_info": ""}
    return ApiError(status, {"errors": [error], "trace": trace, "status_code": status})


def iam_error(request: Request, status: int, code: str, message: str) -> ApiError:
    """IAM token endpoint style: ``errorCode``/``errorMessage``/``context``.

    ibm-cloud-sdk-core shows ``errorMessage`` to the user; scripts match on ``errorCode``.
    """
    now = dt.datetime.now(dt.UTC).strftime("%d.%m.%Y %H:%M:%S:%f")[:-3] + " UTC"
    context = {
        "requestId": uuid.uuid4().hex,
        "requestType": "incoming.Identity_Token",
        "userAgent": request.headers.get("user-agent", ""),
        "url": "https://iam.cloud.ibm.com",
        "instanceId": "qsandbox-iam",
        "threadId": uuid.uuid4().hex[:8],
        "host": "qsandbox-iam",
        "startTime": now,
        "endTime": now,
        "elapsedTime": "0",
        "locale": "en_US",
        "clusterName": "qsandbox",
    }
    return ApiError(status, {"errorCode": code, "errorMessage": message, "context": context})


async def handle_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body, status_code=exc.status)
