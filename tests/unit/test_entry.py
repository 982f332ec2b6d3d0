from __future__ import annotations

import pytest

from qsandbox.common.handoff import Start
from qsandbox.inside.entry import saved_account


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


def test_heartbeats_keep_the_silence_watchdog_quiet_and_silence_trips_it():
    """The entry point's second dead-man switch, with a short timeout (the real one is 20 s)."""
    import queue
    import threading
    import time

    from qsandbox.common.handoff import ALIVE, Alive, decode
    from qsandbox.inside.entry import _watch_silence

    assert isinstance(decode(ALIVE), Alive)
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    heard = [time.monotonic()]
    threading.Thread(target=_watch_silence, args=(events, heard, 0.6), daemon=True).start()
    for _ in range(8):  # 1.2 s of heartbeats every 0.15 s: no alarm
        time.sleep(0.15)
        heard[0] = time.monotonic()
    assert events.empty()
    assert events.get(timeout=3) == ("silent", "")  # then silence
