"""One run and everything it is made of (layer 2 of the launcher, apart from `checks`).

- `run`: one run's story: check, prepare, hand off, supervise, tear down, confirm;
- `plans`: what each mode needs (relayed, open, own emulator, shared emulator), and what a run learns;
- `admission`: every check before anything starts (key source, inputs, --output, CA, engine, image);
- `lifecycle`: the clean-up stack, signals, abort, the sandbox made and waited for;
- `handover`: the key goes in; `live`: the script's output, live; `keepalive`: heartbeat, token refresher;
- `ending`: how a run ended and its result; `batch`: many runs; `report`: JSON and JUnit;
- `revoke`: the key broker (short-lived tokens, --revoke-after) as a keyed helper sandbox;
- `relay`: the relay's authority; `egress`: the allowlist; `stream`: the run's framed stream;
- `transfer`: inputs out, /output in; `inputs_policy`: what --workdir leaves out;
- `terminal`: what reaches a terminal;
- `lab`: `qsandbox lab`, a run whose browser connections the launcher relays in, and whose work
  comes back into DIR.
"""
