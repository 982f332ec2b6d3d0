"""API keys and the tokens minted from them.

Keys are only ever handled as SHA-256 digests after the first line of ``check_key``; tokens are
HS256 JWTs signed with a per-process secret (the client decodes ``exp``/``iat`` without checking
the signature). A key deleted through IAM Identity is refused from then on, and every token minted
from it stops working, because each token names its key id and the id is checked on every call.

IAM Identity lets an identity list, create and delete its own API keys, as the real IAM does for
user keys: a key created with a token is a new key of the token's identity (``iam_id``), accepted
from then on, even when the emulator accepts only configured keys. Its value is in the create
response and nowhere else; the emulator keeps its digest.

Each key is one tenant (``tenant``), with the keys it creates: a shared emulator serves many
users' throwaway keys, and what one tenant made (jobs, sessions, usage, API keys) is invisible to
every other, as another account's is on IBM's service. The tenant is the id of the key it started
from (a digest of the whole key), not the ``iam_id``, whose ten hex digits a key could be searched
for to collide with.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
import uuid
from typing import Any

import jwt

from ..common import platform_constants as constants
from .config import PlatformConfig

_SANE_KEY = re.compile(r"^[A-Za-z0-9_\-]{20,128}$")
_KEY_NAMESPACE = uuid.UUID("0b5f6c1e-2d4a-4f3b-8e7c-9a1d2b3c4d5e")
_REFRESH_TTL = 30 * 24 * 3600


def usable_key(value: str) -> bool:
    """A key value the emulator can accept later (IAM itself takes any value of 32 characters or more)."""
    return len(value) >= 32 and bool(_SANE_KEY.match(value))


def key_digest(apikey: str) -> str:
    return hashlib.sha256(apikey.encode()).hexdigest()


def key_id(digest: str) -> str:
    """Stable IAM Identity id of a key, derived from its digest (never from the key)."""
    return f"ApiKey-{uuid.uuid5(_KEY_NAMESPACE, digest)}"


class Credentials:
    """Which keys are accepted, and minting/verification of IAM tokens."""

    def __init__(self, config: PlatformConfig) -> None:
        self._config = config
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._deleted: set[str] = set()  # key ids
        self._seen: dict[str, dict[str, Any]] = {}  # key id -> details (no key material), in creation order
        self._created: set[str] = set()  # digests of keys created through IAM Identity
        self._refresh: dict[str, tuple[str, float]] = {}  # refresh token -> (key id, expiry)
        for digest in config.key_sha256:
            self._remember(digest)

    def _remember(self, digest: str) -> dict[str, Any]:
        kid = key_id(digest)
        with self._lock:
            if kid not in self._seen:
                iam_id = f"IBMid-{digest[:10].upper()}"
                self._seen[kid] = _details(kid, kid, iam_id, "qsandbox", "", iam_id)
            return self._seen[kid]

    def check_key(self, apikey: str) -> str | None:
        """Return the key's id if the key is accepted, else ``None``."""
        if not _SANE_KEY.match(apikey or ""):
            return None
        digest = key_digest(apikey)
        if not self._config.open_mode and digest not in self._config.key_sha256 and digest not in self._created:
            return None
        kid = key_id(digest)
        if kid in self._deleted:
            return None
        self._remember(digest)
        return kid

    def _alive(self, kid: str) -> bool:
        with self._lock:
            return self._alive_locked(kid)

    def _alive_locked(self, kid: str) -> bool:
        return kid in self._seen and kid not in self._deleted

    def mint(self, kid: str) -> dict[str, Any]:
        """IAM ``/identity/token`` response body for key ``kid``."""
        details = self._seen[kid]
        now = int(time.time())
        ttl = self._config.token_ttl
        claims = {
            "iam_id": details["iam_id"],
            "id": details["iam_id"],
            "realmid": "IBMid",
            "sub": details["iam_id"],
            "sub_type": "ApiKey",
            "account": {"bss": constants.ACCOUNT_ID, "valid": True},
            "iss": "https://iam.cloud.ibm.com/identity",
            "grant_type": "urn:ibm:params:oauth:grant-type:apikey",
            "scope": "ibm openid",
            "client_id": "default",
            "iat": now,
            "exp": now + ttl,
            "qsandbox_key": kid,
            "qsandbox_typ": "access",
        }
        # Opaque, like IAM's own: no pattern can find it in output, only knowing it can.
        refresh = secrets.token_urlsafe(96)
        self._refresh[refresh] = (kid, now + _REFRESH_TTL)
        return {
            "access_token": jwt.encode(claims, self._secret, algorithm="HS256"),
            "refresh_token": refresh,
            "ims_user_id": int(details["iam_id"][6:], 16) % 10**7,
            "token_type": "Bearer",
            "expires_in": ttl,
            "expiration": now + ttl,
            "scope": "ibm openid",
        }

    def _decode(self, token: str, typ: str) -> dict[str, Any] | None:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["exp", "iat"]})
        except jwt.PyJWTError:
            return None
        if claims.get("qsandbox_typ") != typ or not self._alive(claims.get("qsandbox_key", "")):
            return None
        return claims

    def verify_access(self, token: str) -> dict[str, Any] | None:
        """Claims of a valid, unexpired access token whose key is not deleted."""
        return self._decode(token, "access")

    def key_from_refresh(self, token: str) -> str | None:
        kid, expires = self._refresh.get(token, ("", 0))
        return kid if expires > time.time() and self._alive(kid) else None

    def key_details(self, apikey: str) -> dict[str, Any] | None:
        """IAM Identity ``ApiKey`` body for an accepted key; the key itself is not echoed."""
        kid = self.check_key(apikey)
        if kid is None:
            return None
        return _body(self._seen[kid])

    def tenant(self, kid: str) -> str | None:
        """The tenant a live key belongs to, or ``None`` if there is no such live key."""
        with self._lock:
            return self._seen[kid]["tenant"] if self._alive_locked(kid) else None

    def list_keys(self, tenant: str) -> list[dict[str, Any]]:
        """``ApiKey`` bodies of the live keys of one tenant, oldest first (no values)."""
        with self._lock:
            return [_body(d) for kid, d in self._seen.items() if d["tenant"] == tenant and self._alive_locked(kid)]

    def create(self, creator: str, name: str, description: str, apikey: str | None) -> dict[str, Any] | None:
        """A new key of the identity and tenant of key ``creator``: its ``ApiKey`` body with the value
        (the only time it is given out), or ``None`` if the passed-through value is already a key."""
        value = apikey if apikey is not None else secrets.token_urlsafe(33)  # 44 URL-safe characters, like IAM's
        digest = key_digest(value)
        kid = key_id(digest)
        with self._lock:
            if kid in self._seen or digest in self._config.key_sha256:
                return None
            tenant, iam_id = self._seen[creator]["tenant"], self._seen[creator]["iam_id"]
            self._created.add(digest)
            self._seen[kid] = _details(kid, tenant, iam_id, name, description, iam_id)
            return {**_body(self._seen[kid]), "apikey": value}

    def delete(self, kid: str) -> bool:
        """Delete a known key; ``False`` if there is no such (live) key."""
        with self._lock:
            if kid not in self._seen or kid in self._deleted:
                return False
            self._deleted.add(kid)
            return True


def _details(kid: str, tenant: str, iam_id: str, name: str, description: str, created_by: str) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%dT%H:%M+0000", time.gmtime())
    return {
        "id": kid,
        "tenant": tenant,
        "iam_id": iam_id,
        "name": name,
        "description": description,
        "created_by": created_by,
        "created_at": created,
    }


def _body(details: dict[str, Any]) -> dict[str, Any]:
    """IAM Identity ``ApiKey`` response body; ``apikey`` is empty (a user key's value is never stored)."""
    kid = details["id"]
    return {
        "id": kid,
        "entity_tag": "1-" + kid[-32:],
        "crn": f"crn:v1:bluemix:public:iam-identity::a/{constants.ACCOUNT_ID}::apikey:{kid}",
        "locked": False,
        "disabled": False,
        "created_at": details["created_at"],
        "created_by": details["created_by"],
        "modified_at": details["created_at"],
        "name": details["name"],
        **({"description": details["description"]} if details["description"] else {}),
        "iam_id": details["iam_id"],
        "account_id": constants.ACCOUNT_ID,
        "apikey": "",
    }
