"""Runs in a short-lived helper container: the IBM Cloud calls that need the key but not the script.

    python -m qsandbox.inside.broker      (reads one JSON request line on stdin, prints one JSON line)

Request: {"op": "revoke" | "token", "token": KEY, "ca_pem": PEM or null}. The key arrives over the attached
stdin like the sandbox's, never in Env or Cmd. `revoke` finds the key's id from the key itself
(IAM Identity `GET /v1/apikeys/details` with the `IAM-ApiKey` header) and deletes it, with
ibm-platform-services' `IamIdentityV1`, the client IBM documents for this.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any


def revoke(key: str) -> dict[str, Any]:
    from ibm_cloud_sdk_core import ApiException  # type: ignore[import-untyped]  # no py.typed
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator  # type: ignore[import-untyped]  # no py.typed
    from ibm_platform_services import IamIdentityV1  # type: ignore[import-untyped]  # no py.typed

    try:
        service = IamIdentityV1(authenticator=IAMAuthenticator(apikey=key))
        details = service.get_api_keys_details(iam_api_key=key).get_result()
        key_id = details["id"]
        service.delete_api_key(id=key_id)
    except ApiException as e:
        return {"ok": False, "error": f"IAM answered {e.code}: {e.message}"}
    except Exception as e:  # noqa: BLE001 - reported to the launcher, which tells the user
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {"ok": True, "id": key_id, "name": details.get("name")}


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


def main() -> int:
    line = sys.stdin.readline()
    try:
        request = json.loads(line)
    except ValueError:
        print(json.dumps({"ok": False, "error": "bad request"}))
        return 2
    if request.get("ca_pem"):
        fd, path = tempfile.mkstemp(suffix=".pem")  # /tmp is this container's tmpfs
        with os.fdopen(fd, "w") as f:
            f.write(request["ca_pem"])
        os.environ["REQUESTS_CA_BUNDLE"] = path
    if request.get("op") == "revoke":
        result = revoke(request["token"])
    elif request.get("op") == "token":
        result = mint(request["token"])
    else:
        result = {"ok": False, "error": f"unknown op {request.get('op')!r}"}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
