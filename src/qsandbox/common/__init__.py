"""What both sides of the sandbox wall use.

`mux` (the one framed protocol on a sandbox's stream), `handoff` (its control messages), `paths`
(the paths inside the sandbox), `redact` (masking the key's forms), `text` (showing names safely),
`errors` (the exit codes), `platform_constants` (the emulator's identities).

Code here runs on the host (imported by `qsandbox.launcher`) and inside the sandbox (imported by
`qsandbox.inside`), so it imports only the standard library: no docker SDK, no click, no Qiskit.
It never holds a key longer than one call.
"""
