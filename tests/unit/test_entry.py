from __future__ import annotations

import pytest

from qsandbox.entry import saved_account
from qsandbox.handoff import Start


@pytest.mark.parametrize("channel", ["ibm_quantum_platform", "ibm_cloud"])
@pytest.mark.parametrize("instance", [None, "crn:v1:bluemix:public:quantum-computing:us-east:a/x:y::"])
def test_saved_account_matches_the_clients_own_format(channel, instance):
    accounts = pytest.importorskip("qiskit_ibm_runtime.accounts")
    token = "k" * 44
    expected = accounts.Account.create_account(channel=channel, token=token, instance=instance).to_saved_format()
    expected["is_default_account"] = True
    name = accounts.management.AccountManager._get_default_account_name(channel)  # noqa: SLF001
    ours = saved_account(Start(token=token, channel=channel, instance=instance))
    assert ours == {name: expected}
    loaded = accounts.Account.from_saved_format(ours[name])  # and the client reads it back as the same
    assert loaded.token == token and loaded.instance == instance and loaded.channel == channel
