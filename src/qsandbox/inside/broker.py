"""Runs in a short-lived helper container: the IBM Cloud calls that need the key but not the script.

    entry point: run -m qsandbox.inside.broker OP [KEEP_ID ...]      (prints one JSON line)

OP is "revoke", "token" or "keys"; KEEP_ID the ids `keys` listed (IAM's ids, nothing secret). The
helper is a sandbox like a run's, with the broker as its script: the key arrives in the start
message like the sandbox's, never in Env or Cmd, and the entry point writes it into the tmpfs
(TOKEN_FILE), where the broker reads it; IAM is reached through the launcher's relay like a run's.
With ibm-platform-services' `IamIdentityV1`, the client IBM documents for this:

- `keys` lists the API keys of the key's own identity (IAM Identity `GET /v1/apikeys/details` with
  the `IAM-ApiKey` header gives its `iam_id` and `account_id`; then `GET /v1/apikeys?account_id=
  &iam_id=`, page by page): their ids, which the launcher keeps while the run lasts.
- `revoke` deletes the key (found by its value, as above). Given `keep` (the ids `keys` listed
  before the run), it first lists the identity's keys again and deletes every one not in `keep`:
  keys a script made with the key or a token of it during the run (`POST /v1/apikeys`), which would
  otherwise outlive the key. It answers with ids only: a key's name is the script's choice.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..common.paths import TOKEN_FILE

_PAGE = 100  # IAM Identity's largest page
_MAX_PAGES = 100  # 10,000 keys: more than IAM lets one identity have


def _service(key: str) -> Any:
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator  # type: ignore[import-untyped]  # no py.typed
    from ibm_platform_services import IamIdentityV1  # type: ignore[import-untyped]  # no py.typed

    return IamIdentityV1(authenticator=IAMAuthenticator(apikey=key))


def _identity_keys(service: Any, details: dict[str, Any]) -> list[dict[str, Any]]:
    """The API keys of the identity `details` (an `ApiKey` body) belongs to, every page."""
    found: list[dict[str, Any]] = []
    token = None
    for _ in range(_MAX_PAGES):
        page = service.list_api_keys(
            account_id=details["account_id"], iam_id=details["iam_id"], pagesize=_PAGE, pagetoken=token
        ).get_result()
        found += page.get("apikeys") or []
        token = parse_qs(urlsplit(page.get("next") or "").query).get("pagetoken", [None])[0]
        if token is None:
            return found
    raise RuntimeError(f"IAM listed more than {_PAGE * _MAX_PAGES} API keys for this identity")


def _brief(key: dict[str, Any]) -> dict[str, str]:
    """What the launcher may show of a key: IAM's id and creation time (never its name or value)."""
    return {"id": str(key.get("id")), "created_at": str(key.get("created_at") or "")}


def _said(e: Exception) -> str:
    from ibm_cloud_sdk_core import ApiException  # type: ignore[import-untyped]  # no py.typed

    return f"IAM answered {e.code}: {e.message}" if isinstance(e, ApiException) else f"{type(e).__name__}: {e}"


def keys(key: str) -> dict[str, Any]:
    try:
        service = _service(key)
        details = service.get_api_keys_details(iam_api_key=key).get_result()
        listed = _identity_keys(service, details)
    except Exception as e:  # noqa: BLE001 - reported to the launcher, which tells the user
        return {"ok": False, "error": _said(e)}
    return {"ok": True, "id": details["id"], "keys": [_brief(k) for k in listed]}


def revoke(key: str, keep: list[str] | None = None) -> dict[str, Any]:
    """Delete the keys made during the run (not in `keep`), then the key itself, whatever happened
    to the others: the key dies even when IAM refuses a listing or a deletion."""
    made: list[dict[str, str]] = []  # keys made during the run, deleted
    failed: list[dict[str, str]] = []  # ... and those IAM did not let us delete
    gone: list[str] = []  # keys listed before the run and missing now: a script deleted them
    unchecked = None  # why the keys made during the run could not be looked for
    try:
        service = _service(key)
        details = service.get_api_keys_details(iam_api_key=key).get_result()
        key_id = details["id"]
    except Exception as e:  # noqa: BLE001 - reported to the launcher, which tells the user
        return {"ok": False, "error": _said(e)}
    if keep is not None:
        try:
            listed = _identity_keys(service, details)
        except Exception as e:  # noqa: BLE001
            unchecked = _said(e)
            listed = []
        gone = sorted(set(keep) - {str(k.get("id")) for k in listed} - {key_id}) if unchecked is None else []
        for other in listed:
            if other.get("id") in keep or other.get("id") == key_id:
                continue
            try:
                service.delete_api_key(id=other["id"])
                made.append(_brief(other))
            except Exception as e:  # noqa: BLE001
                failed.append({**_brief(other), "error": _said(e)})
    result: dict[str, Any] = {"id": key_id, "made": made, "failed": failed, "gone": gone, "unchecked": unchecked}
    try:
        service.delete_api_key(id=key_id)
    except Exception as e:  # noqa: BLE001
        return {**result, "ok": False, "error": _said(e)}
    return {**result, "ok": not failed and unchecked is None}


def mint(key: str) -> dict[str, Any]:
    """Exchange the key for an IAM access token (only the access token goes back: a refresh
    token lives for days and would outlast the sandbox)."""
    from ibm_cloud_sdk_core import ApiException
    from ibm_cloud_sdk_core.token_managers.iam_token_manager import IAMTokenManager  # type: ignore[import-untyped]  # no py.typed

    try:
        body = IAMTokenManager(apikey=key).request_token()
    except ApiException as e:
        return {"ok": False, "error": f"IAM answered {e.code}: {e.message}"}
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {
        "ok": True,
        "access_token": body["access_token"],
        "expires_in": int(body["expires_in"]),
        "expiration": int(body["expiration"]),
    }


def main(argv: list[str]) -> int:
    op, keep = (argv[0], argv[1:]) if argv else ("", [])
    with open(TOKEN_FILE, encoding="utf-8") as f:
        key = f.read()
    if op == "revoke":
        result = revoke(key, keep if keep != ["-"] else None)
    elif op == "keys":
        result = keys(key)
    elif op == "token":
        result = mint(key)
    else:
        result = {"ok": False, "error": f"unknown op {op!r}"}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
