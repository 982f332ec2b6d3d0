"""Inside the sandbox: code that runs in the container, as the non-root sandbox user.

`entry` is the container's entry point (PID 1, non-dumpable): it reads the start message and the
inputs from the framed stream (`transfer` unpacks them, and streams /output back), writes the key
to the tmpfs mounts, spawns the script's own interpreter (`runner`), masks tokens in its output,
serves the CONNECT proxy that is the sandbox's only way out (`relay`), cancels its jobs on abort
(`cancel`), and ends everything when the launcher's stream ends or its heartbeat stops.
`tokenwatch` and `tokenserver` serve the short-lived token mode; `notebook` and `kernel` run a
notebook cell by cell; `lab` is the entry point's half of `qsandbox lab` (the launcher's channels
to JupyterLab's port only, and what changed under /work back, masked) and `jupyter` its script
(JupyterLab on the sandbox's loopback); `probe` reports the hardening for `doctor`; `broker` makes IAM calls for the
launcher as a helper sandbox's script. Code here may import Qiskit, never the docker SDK, click or
the launcher: it has no engine to talk to.
"""
