"""Inside the sandbox: code that runs in the container, as the non-root sandbox user.

`entry` is the container's entry point: it reads the key from its stdin (the hand-off), writes it
to the tmpfs mounts, runs the user's script, masks tokens in its output, cancels its jobs on abort
(`cancel`), and ends everything when the launcher's stream ends or its heartbeat stops. `tokenwatch`
and `tokenserver` serve the short-lived token mode; `probe` reports the hardening for `doctor`;
`broker` makes IAM calls for the launcher in a helper container. Code here may import Qiskit,
never the docker SDK, click or the launcher: it has no engine to talk to.
"""
