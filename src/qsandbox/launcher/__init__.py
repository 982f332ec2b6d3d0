"""The launcher: everything that runs on the user's machine, outside any container.

It holds the API key in memory (as a `credentials.Secret`), talks to the container engine with the
docker SDK, and never imports Qiskit. One run, in order: `cli` (commands) -> `settings` (run
settings, the one hardening spec) -> `credentials` (key sources) -> `engine`, `preflight`, `image`
-> `localplatform` (the emulator's network and container) -> `sandbox` (container lifecycle) ->
`run` (one run as an object: prepare, hand off, supervise, tear down, confirm). Also `doctor`,
`audit`, `revoke`. Nothing here writes the key to a file, an argument, an environment or a log.
"""
