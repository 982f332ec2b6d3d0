"""What both sides of the sandbox wall use: the hand-off protocol, the paths inside, redaction, errors.

Code here runs on the host (imported by `qsandbox.launcher`) and inside the sandbox (imported by
`qsandbox.inside`), so it imports only the standard library: no docker SDK, no click, no Qiskit.
It never holds a key longer than one call.
"""
