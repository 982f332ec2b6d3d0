"""IAM (``iam.cloud.ibm.com``): token exchange and the bits of IAM Identity scripts use.

Token requests are form-encoded (``ibm-cloud-sdk-core``); parsed by hand so the emulator needs no
multipart package. Refusals use the status and ``errorCode`` real IAM uses, because scripts and
the client react to them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response

from .auth import Credentials
from .errors import iam_error, platform_error

router = APIRouter()

APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"
KEY_NOT_FOUND = ("BXNIM0415E", "Provided API key could not be found.")


def credentials(request: Request) -> Credentials:
    creds: Credentials = request.app.state.platform.credentials
    return creds


def bearer_claims(request: Request) -> dict[str, Any]:
    """Claims of the request's ``Authorization: Bearer`` token, or a 401 like IBM Cloud's."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    claims = credentials(request).verify_access(token.strip()) if scheme == "Bearer" else None
    if claims is None:
        raise platform_error(401, "Unauthorized: invalid or expired token", "unauthorized")
    return claims


@router.post("/identity/token")
async def identity_token(request: Request) -> dict[str, Any]:
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    grant = form.get("grant_type", "")
    creds = credentials(request)
    if grant == APIKEY_GRANT:
        kid = creds.check_key(form.get("apikey", ""))
        if kid is None:
            raise iam_error(request, 400, *KEY_NOT_FOUND)
    elif grant == "refresh_token":
        kid = creds.key_from_refresh(form.get("refresh_token", ""))
        if kid is None:
            raise iam_error(request, 400, "BXNIM0407E", "Provided refresh token is invalid.")
    else:
        raise iam_error(request, 400, "BXNIM0103E", "Unsupported grant type.")
    return creds.mint(kid)


@router.get("/v1/apikeys/details")
def apikey_details(request: Request) -> dict[str, Any]:
    bearer_claims(request)
    details = credentials(request).key_details(request.headers.get("iam-apikey", ""))
    if details is None:
        raise platform_error(404, "API key not found.", "not_found")
    return details


@router.delete("/v1/apikeys/{apikey_id}", status_code=204)
def delete_apikey(apikey_id: str, request: Request) -> Response:
    bearer_claims(request)
    if not credentials(request).delete(apikey_id):
        raise platform_error(404, f"API key {apikey_id} not found.", "not_found")
    return Response(status_code=204)
