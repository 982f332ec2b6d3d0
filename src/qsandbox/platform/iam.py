"""IAM (``iam.cloud.ibm.com``): token exchange and the bits of IAM Identity scripts use.

Token requests are form-encoded (``ibm-cloud-sdk-core``); parsed by hand so the emulator needs no
multipart package. Refusals use the status and ``errorCode`` real IAM uses, because scripts and
the client react to them.

IAM Identity's API keys, as ibm-platform-services' ``IamIdentityV1`` calls them: details by value
(``GET /v1/apikeys/details``), list (``GET /v1/apikeys?account_id=&iam_id=&pagesize=&pagetoken=``,
pages linked by ``next``), create (``POST /v1/apikeys``, the value in the answer only) and delete
(``DELETE /v1/apikeys/{id}``). A user manages the keys of its own identity only: another
``iam_id`` or account is refused with 403, as IAM refuses it. What is listed and deleted is decided
by the key's tenant (``auth.Credentials``), so another tenant's keys are never listed, whatever
``iam_id`` they show.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request, Response

from ..common import platform_constants as constants
from .auth import Credentials, usable_key
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


def bearer_tenant(request: Request) -> str:
    """The tenant of the request's token (``auth.Credentials``), or a 401 like ``bearer_claims``."""
    tenant = credentials(request).tenant(bearer_claims(request)["qsandbox_key"])
    if tenant is None:  # its key was deleted since the token was checked
        raise platform_error(401, "Unauthorized: invalid or expired token", "unauthorized")
    return tenant


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


@router.get("/v1/apikeys")
def list_apikeys(
    request: Request,
    account_id: str | None = None,
    iam_id: str | None = None,
    pagesize: int = 20,
    pagetoken: str | None = None,
) -> dict[str, Any]:
    claims = bearer_claims(request)
    _own(claims, iam_id, account_id)
    if not 1 <= pagesize <= 100:
        raise platform_error(400, "pagesize must be between 1 and 100.", "invalid_parameter")
    try:
        offset = int(pagetoken or 0)
    except ValueError:
        raise platform_error(400, "Invalid pagetoken.", "invalid_parameter") from None
    creds = credentials(request)
    keys = creds.list_keys(creds.tenant(claims["qsandbox_key"]) or "")
    if not 0 <= offset <= len(keys):
        raise platform_error(400, "Invalid pagetoken.", "invalid_parameter")

    def link(at: int) -> str:
        query = {k: v for k, v in request.query_params.items() if k != "pagetoken"}
        if at:
            query["pagetoken"] = str(at)
        return f"https://{request.headers.get('host', 'iam.cloud.ibm.com')}/v1/apikeys?{urlencode(query)}"

    body: dict[str, Any] = {"offset": offset, "limit": pagesize, "first": link(0)}
    if offset:
        body["previous"] = link(max(0, offset - pagesize))
    if offset + pagesize < len(keys):
        body["next"] = link(offset + pagesize)
    body["apikeys"] = keys[offset : offset + pagesize]
    return body


@router.post("/v1/apikeys", status_code=201)
async def create_apikey(request: Request) -> dict[str, Any]:
    claims = bearer_claims(request)
    try:
        data = json.loads(await request.body())
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(data.get("iam_id"), str):
        raise platform_error(400, "name and iam_id are required.", "invalid_parameter")
    _own(claims, data["iam_id"], data.get("account_id"))
    if data.get("store_value"):
        raise platform_error(400, "The value of a user API key cannot be stored.", "invalid_parameter")
    value = data.get("apikey")
    if value is not None and not (isinstance(value, str) and usable_key(value)):
        raise platform_error(
            400, "apikey: at least 32 characters, and for this emulator URL-safe ones only.", "invalid_parameter"
        )
    description = data.get("description")
    created = credentials(request).create(
        claims["qsandbox_key"], data["name"][:1024], description[:1024] if isinstance(description, str) else "", value
    )
    if created is None:
        raise platform_error(409, "An API key with this value exists already.", "conflict")
    return created


@router.delete("/v1/apikeys/{apikey_id}", status_code=204)
def delete_apikey(apikey_id: str, request: Request) -> Response:
    claims = bearer_claims(request)
    creds = credentials(request)
    owner = creds.tenant(apikey_id)
    if owner is None:
        raise platform_error(404, f"API key {apikey_id} not found.", "not_found")
    if owner != creds.tenant(claims["qsandbox_key"]):
        raise platform_error(403, "You are not authorized to delete this API key.", "forbidden")
    if not creds.delete(apikey_id):
        raise platform_error(404, f"API key {apikey_id} not found.", "not_found")
    return Response(status_code=204)


def _own(claims: dict[str, Any], iam_id: str | None, account_id: str | None) -> None:
    """User API keys: an identity manages its own, in its own account; anything else is a 403."""
    if iam_id not in (None, claims["iam_id"]) or account_id not in (None, constants.ACCOUNT_ID):
        raise platform_error(403, "You are not authorized to manage API keys of this identity.", "forbidden")
