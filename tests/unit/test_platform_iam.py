"""IAM token exchange and IAM Identity (API key details / delete) of the emulated platform."""

import hashlib
import secrets
import warnings
from typing import Any

import jwt
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # starlette: "install httpx2" (import time)
    from fastapi.testclient import TestClient

from qsandbox.common import platform_constants as constants
from qsandbox.platform import auth
from qsandbox.platform.app import PlatformConfig, create_app

IAM = {"Host": "iam.cloud.ibm.com"}
APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"
KEY = secrets.token_urlsafe(32)


def _client(**config) -> TestClient:
    config.setdefault("backends", ("FakeManilaV2",))
    return TestClient(create_app(PlatformConfig(**config)))


@pytest.fixture(scope="module")
def closed():
    """Only KEY is accepted (its digest is configured)."""
    with _client(key_sha256=(hashlib.sha256(KEY.encode()).hexdigest(),), token_ttl=600) as c:
        yield c


def token(client, key):
    return client.post(
        "/identity/token", headers=IAM, data={"grant_type": APIKEY_GRANT, "apikey": key, "response_type": "cloud_iam"}
    )


def runtime_get(client, access_token, path="/api/v1/backends"):
    return client.get(
        path,
        headers={
            "Host": "quantum.cloud.ibm.com",
            "Authorization": f"Bearer {access_token}",
            "Service-CRN": constants.INSTANCE_CRN,
        },
    )


def assert_key_refused(response):
    assert response.status_code == 400
    body = response.json()
    assert body["errorCode"] == "BXNIM0415E"
    assert body["errorMessage"] == "Provided API key could not be found."
    assert isinstance(body["context"], dict)


def test_token_is_a_jwt_the_client_can_schedule_refreshes_with(closed):
    response = token(closed, KEY)
    assert response.status_code == 200
    body = response.json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600 == body["expires_in"]
    assert body["expiration"] == claims["exp"]
    assert body["token_type"] == "Bearer" and body["refresh_token"]
    assert KEY not in response.text
    assert runtime_get(closed, body["access_token"]).status_code == 200


def test_wrong_key_refused_like_iam(closed):
    assert_key_refused(token(closed, secrets.token_urlsafe(32)))
    assert_key_refused(token(closed, ""))


def test_refresh_grant_and_refresh_token_is_not_an_access_token(closed):
    refresh = token(closed, KEY).json()["refresh_token"]
    response = closed.post(
        "/identity/token", headers=IAM, data={"grant_type": "refresh_token", "refresh_token": refresh}
    )
    assert response.status_code == 200
    assert runtime_get(closed, response.json()["access_token"]).status_code == 200
    assert runtime_get(closed, refresh).status_code == 401
    bad = closed.post("/identity/token", headers=IAM, data={"grant_type": "refresh_token", "refresh_token": "x.y.z"})
    assert bad.status_code == 400


def test_expired_token_refused(closed, monkeypatch):
    monkeypatch.setattr(auth.time, "time", lambda: 1_000_000.0)
    stale = token(closed, KEY).json()["access_token"]
    monkeypatch.undo()
    assert runtime_get(closed, stale).status_code == 401


def test_open_mode_accepts_sane_keys_only():
    with _client() as client:
        assert token(client, secrets.token_urlsafe(32)).status_code == 200
        assert_key_refused(token(client, "short"))
        assert_key_refused(token(client, "has spaces and ! marks in it, 40 chars.."))


def test_apikey_details_and_delete_revoke_key_and_its_tokens():
    key = secrets.token_urlsafe(32)
    with _client() as client:
        tokens = token(client, key).json()
        auth_header = {**IAM, "Authorization": f"Bearer {tokens['access_token']}"}

        assert client.get("/v1/apikeys/details", headers={**IAM, "IAM-ApiKey": key}).status_code == 401
        details = client.get("/v1/apikeys/details", headers={**auth_header, "IAM-ApiKey": key})
        assert details.status_code == 200
        body = details.json()
        assert body["id"].startswith("ApiKey-") and body["account_id"] == constants.ACCOUNT_ID
        assert key not in details.text

        assert client.delete(f"/v1/apikeys/{body['id']}", headers=auth_header).status_code == 204
        assert_key_refused(token(client, key))
        assert runtime_get(client, tokens["access_token"]).status_code == 401
        refreshed = client.post(
            "/identity/token",
            headers=IAM,
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        )
        assert refreshed.status_code == 400

        other = token(client, secrets.token_urlsafe(32)).json()["access_token"]
        again = client.delete(f"/v1/apikeys/{body['id']}", headers={**IAM, "Authorization": f"Bearer {other}"})
        assert again.status_code == 404


def _bearer(client, key):
    return {**IAM, "Authorization": f"Bearer {token(client, key).json()['access_token']}"}


def _ids(client, headers, **params):
    """Every key id of a listing, page by page through `next` (as IamIdentityV1's callers do)."""
    from urllib.parse import parse_qs, urlsplit

    ids, params = [], {"pagesize": 1, **params}
    while True:
        page = client.get("/v1/apikeys", headers=headers, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert all(k["apikey"] == "" for k in body["apikeys"])
        ids += [k["id"] for k in body["apikeys"]]
        if "next" not in body:
            return ids
        params = {k: v[0] for k, v in parse_qs(urlsplit(body["next"]).query).items()}


def test_an_identity_lists_creates_and_deletes_its_own_api_keys(closed):
    """IAM Identity as a script with a token can use it: a new key of the same identity works at
    once (also when only configured keys are accepted), is listed, and dies when deleted."""
    headers = _bearer(closed, KEY)
    own = closed.get("/v1/apikeys/details", headers={**headers, "IAM-ApiKey": KEY}).json()
    me = {"account_id": own["account_id"], "iam_id": own["iam_id"]}
    before = _ids(closed, headers, **me)
    assert own["id"] in before

    made = closed.post("/v1/apikeys", headers=headers, json={"name": "mine now", **me})
    assert made.status_code == 201, made.text
    new = made.json()
    assert new["iam_id"] == own["iam_id"] and new["name"] == "mine now" and new["created_by"] == own["iam_id"]
    assert len(new["apikey"]) == 44 and new["apikey"] != KEY
    assert token(closed, new["apikey"]).status_code == 200  # works at once
    assert _ids(closed, headers, **me) == [*before, new["id"]]
    assert new["apikey"] not in closed.get("/v1/apikeys", headers=headers, params=me).text

    assert closed.delete(f"/v1/apikeys/{new['id']}", headers=headers).status_code == 204
    assert_key_refused(token(closed, new["apikey"]))
    assert _ids(closed, headers, **me) == before


def test_api_keys_of_another_identity_are_refused():
    with _client() as client:
        mine, theirs = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        headers = _bearer(client, mine)
        other = client.get("/v1/apikeys/details", headers={**_bearer(client, theirs), "IAM-ApiKey": theirs}).json()
        assert client.get("/v1/apikeys", headers=headers, params={"iam_id": other["iam_id"]}).status_code == 403
        made = client.post("/v1/apikeys", headers=headers, json={"name": "x", "iam_id": other["iam_id"]})
        assert made.status_code == 403
        assert client.delete(f"/v1/apikeys/{other['id']}", headers=headers).status_code == 403
        assert token(client, theirs).status_code == 200  # still there
        assert client.get("/v1/apikeys", headers=headers, params={"account_id": "0" * 32}).status_code == 403


def test_a_key_whose_iam_id_collides_is_still_another_tenant():
    """The iam_id shows ten hex digits of the key's digest, which a key can be searched for; what a
    caller may list and delete is decided by the tenant (the whole digest), so a collision gives nothing."""
    with _client() as client:
        mine, theirs = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        other = client.get("/v1/apikeys/details", headers={**_bearer(client, theirs), "IAM-ApiKey": theirs}).json()
        headers = _bearer(client, mine)
        app: Any = client.app  # typed as a bare ASGI callable
        creds = app.state.platform.credentials
        own = client.get("/v1/apikeys/details", headers={**headers, "IAM-ApiKey": mine}).json()
        creds._seen[own["id"]]["iam_id"] = other["iam_id"]  # the collision, made directly
        headers = _bearer(client, mine)  # a token that carries the colliding iam_id
        assert _ids(client, headers, iam_id=other["iam_id"]) == [own["id"]]
        assert client.delete(f"/v1/apikeys/{other['id']}", headers=headers).status_code == 403
        assert token(client, theirs).status_code == 200  # still there


def test_create_api_key_checks_its_body(closed):
    headers = _bearer(closed, KEY)
    me = token(closed, KEY).json()
    iam_id = jwt.decode(me["access_token"], options={"verify_signature": False})["iam_id"]
    assert closed.post("/v1/apikeys", headers=headers, json={"iam_id": iam_id}).status_code == 400
    assert closed.post("/v1/apikeys", headers=headers, content=b"not json").status_code == 400
    body = {"name": "x", "iam_id": iam_id}
    assert closed.post("/v1/apikeys", headers=headers, json={**body, "store_value": True}).status_code == 400
    assert closed.post("/v1/apikeys", headers=headers, json={**body, "apikey": "short"}).status_code == 400
    assert closed.post("/v1/apikeys", headers=headers, json={**body, "apikey": KEY}).status_code == 409
    chosen = secrets.token_urlsafe(32)
    made = closed.post("/v1/apikeys", headers=headers, json={**body, "apikey": chosen})
    assert made.status_code == 201 and made.json()["apikey"] == chosen
    assert token(closed, chosen).status_code == 200
    assert closed.post("/v1/apikeys", headers={**IAM}, json=body).status_code == 401
