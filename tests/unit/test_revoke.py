"""--revoke-after's bookkeeping of API keys made during a run, without an engine or IAM.

The broker's logic runs against a fake IamIdentityV1 (the real one against the emulated IAM is in
tests/docker/test_platform_local.py); the launcher's lines from the broker's answers.
"""

from __future__ import annotations

from typing import Any

import pytest
from ibm_cloud_sdk_core import ApiException

from qsandbox.inside import broker
from qsandbox.launcher.core.credentials import Secret
from qsandbox.launcher.run import revoke as launcher_revoke

KEY = "k" * 44
NO_ENGINE: Any = None  # _broker is replaced: no engine is asked


class _Result:
    def __init__(self, body):
        self.body = body

    def get_result(self):
        return self.body


class FakeIdentity:
    """IamIdentityV1 as the broker calls it: details by value, pages of 2, delete by id."""

    def __init__(self, ids, refuse=(), list_fails=False):
        self.keys = [{"id": i, "name": f"name of {i}", "created_at": "2026-12-04T04:09+0000"} for i in ids]
        self.refuse, self.list_fails, self.deleted = set(refuse), list_fails, []

    def get_api_keys_details(self, iam_api_key):
        assert iam_api_key == KEY
        return _Result({"id": "ApiKey-own", "iam_id": "IBMid-X", "account_id": "acc"})

    def list_api_keys(self, account_id, iam_id, pagesize, pagetoken):
        assert (account_id, iam_id) == ("acc", "IBMid-X")
        if self.list_fails:
            raise ApiException(500, message="listing broke")
        at = int(pagetoken or 0)
        page: dict[str, Any] = {"apikeys": self.keys[at : at + 2]}
        if at + 2 < len(self.keys):
            page["next"] = f"https://iam.cloud.ibm.com/v1/apikeys?iam_id=IBMid-X&pagetoken={at + 2}"
        return _Result(page)

    def delete_api_key(self, id):
        if id in self.refuse:
            raise ApiException(403, message="not yours")
        self.deleted.append(id)
        self.keys = [k for k in self.keys if k["id"] != id]


@pytest.fixture
def identity(monkeypatch):
    def make(*args, **kwargs):
        fake = FakeIdentity(*args, **kwargs)
        monkeypatch.setattr(broker, "_service", lambda key: fake)
        return fake

    return make


def test_keys_lists_every_page_and_gives_ids_and_times_only(identity):
    identity(["ApiKey-own", "ApiKey-a", "ApiKey-b", "ApiKey-c", "ApiKey-d"])
    answer = broker.keys(KEY)
    assert answer["ok"] and answer["id"] == "ApiKey-own"
    assert [k["id"] for k in answer["keys"]] == ["ApiKey-own", "ApiKey-a", "ApiKey-b", "ApiKey-c", "ApiKey-d"]
    assert all(set(k) == {"id", "created_at"} for k in answer["keys"])  # never a name (the script's choice)


def test_revoke_deletes_what_the_run_made_then_the_key(identity):
    fake = identity(["ApiKey-own", "ApiKey-old", "ApiKey-new1", "ApiKey-gone-soon", "ApiKey-new2"])
    fake.keys = [k for k in fake.keys if k["id"] != "ApiKey-gone-soon"]  # a script deleted one of the user's
    answer = broker.revoke(KEY, keep=["ApiKey-own", "ApiKey-old", "ApiKey-gone-soon"])
    assert answer["ok"]
    assert fake.deleted == ["ApiKey-new1", "ApiKey-new2", "ApiKey-own"]  # the key last: its token does the deleting
    assert [k["id"] for k in answer["made"]] == ["ApiKey-new1", "ApiKey-new2"]
    assert answer["gone"] == ["ApiKey-gone-soon"]
    assert [k["id"] for k in fake.keys] == ["ApiKey-old"]


def test_revoke_without_a_list_deletes_the_key_only(identity):
    fake = identity(["ApiKey-own", "ApiKey-other"])
    answer = broker.revoke(KEY)
    assert answer["ok"] and fake.deleted == ["ApiKey-own"] and answer["made"] == []


def test_the_key_dies_even_when_a_new_key_or_the_listing_is_refused(identity):
    fake = identity(["ApiKey-own", "ApiKey-new"], refuse=["ApiKey-new"])
    answer = broker.revoke(KEY, keep=["ApiKey-own"])
    assert not answer["ok"] and fake.deleted == ["ApiKey-own"]
    assert answer["failed"][0]["id"] == "ApiKey-new" and "403" in answer["failed"][0]["error"]

    fake = identity(["ApiKey-own", "ApiKey-new"], list_fails=True)
    answer = broker.revoke(KEY, keep=["ApiKey-own"])
    assert not answer["ok"] and fake.deleted == ["ApiKey-own"] and "listing broke" in answer["unchecked"]


def _said(monkeypatch, answer, before=("ApiKey-own",)):
    sent: dict[str, object] = {}

    def fake_call(self, op, before=None):
        sent.update(op=op, before=before)
        return answer

    monkeypatch.setattr(launcher_revoke.Broker, "_call", fake_call)
    result = launcher_revoke.Broker(NO_ENGINE, "img", Secret(KEY, "test")).revoke(before)
    assert sent == {"op": "revoke", "before": before}
    return result


def test_the_line_names_the_keys_made_by_id(monkeypatch):
    made = [{"id": "ApiKey-new", "created_at": "2026-12-04T04:09+0000"}]
    r = _said(monkeypatch, {"ok": True, "id": "ApiKey-own", "made": made, "failed": [], "gone": []})
    assert r.ok and r.made == 1
    assert r.line() == (
        "qsandbox: API key revoked (id ApiKey-own, and 1 API key made during the run: ApiKey-new created "
        "2026-12-04T04:09+0000); none of them works anywhere"
    )
    r = _said(monkeypatch, {"ok": True, "id": "ApiKey-own", "made": [], "failed": [], "gone": []})
    assert r.line() == "qsandbox: API key revoked (id ApiKey-own); it no longer works anywhere"


def test_what_a_service_sent_back_is_shown_in_iams_characters_only(monkeypatch):
    made = [{"id": "ApiKey-\x1b]0;owned\x07", "created_at": "now\n"}]
    r = _said(
        monkeypatch, {"ok": True, "id": "ApiKey-own", "made": made, "failed": [], "gone": ["\x1b[2J" + "x" * 200]}
    )
    line = r.line()
    assert "\x1b" not in line and "\x07" not in line and "\n" not in line
    assert (
        "ApiKey-??0?owned? created now?" in line and "1 API key of this identity deleted during the run: ??2J" in line
    )
    assert "x" * 81 not in line


def test_a_key_made_during_the_run_left_behind_fails_the_revocation(monkeypatch):
    failed = [{"id": "ApiKey-new", "created_at": "", "error": "IAM answered 403: not yours"}]
    r = _said(monkeypatch, {"ok": False, "id": "ApiKey-own", "made": [], "failed": failed, "gone": []})
    assert not r.ok
    assert r.line() == (
        "qsandbox: REVOKING THE API KEY FAILED: 1 API key made during the run NOT deleted: ApiKey-new (IAM answered "
        "403: not yours); the key itself (id ApiKey-own) revoked; delete what is left yourself in IBM Cloud "
        "(Manage > Access (IAM) > API keys), the key itself also with `qsandbox revoke`"
    )
    r = _said(monkeypatch, {"ok": False, "error": "IAM answered 400: Provided API key could not be found."})
    assert r.line().startswith("qsandbox: REVOKING THE API KEY FAILED: IAM answered 400: Provided API key")


def test_api_keys_refuses_the_run_when_iam_will_not_list(monkeypatch):
    from qsandbox.common.errors import SandboxError

    broker = launcher_revoke.Broker(NO_ENGINE, "img", Secret(KEY, "test"))
    assert KEY not in repr(broker)
    monkeypatch.setattr(launcher_revoke.Broker, "_call", lambda *a, **k: {"ok": False, "error": "IAM answered 403: no"})
    with pytest.raises(SandboxError, match=r"could not list the API keys .*IAM answered 403: no.*nothing was sent"):
        broker.api_keys()
    with pytest.raises(SandboxError, match=r"could not get an IAM access token for the key: IAM answered 403: no"):
        broker.mint()
    keys = [{"id": "ApiKey-own"}, {"id": "ApiKey-b"}]
    monkeypatch.setattr(launcher_revoke.Broker, "_call", lambda *a, **k: {"ok": True, "keys": keys})
    assert broker.api_keys() == ("ApiKey-own", "ApiKey-b")
    answer = {"ok": True, "access_token": "eyJ.x.y", "expires_in": 3600, "expiration": 1999999999}
    monkeypatch.setattr(launcher_revoke.Broker, "_call", lambda *a, **k: answer)
    token = broker.mint()
    assert (token.access_token, token.expiration) == ("eyJ.x.y", 1999999999) and "eyJ.x.y" not in repr(token)
