"""IAM token exchange and IAM Identity (API key details / delete) of the emulated platform."""

import hashlib
import secrets
import warnings

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
