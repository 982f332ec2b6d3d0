"""The emulated IBM Quantum Platform: runs in its own container, plays IBM for rehearsals.

One HTTPS server that answers, under the real host names, everything the unmodified
``qiskit-ibm-runtime`` client talks to (IAM, Global Search, Global Catalog, Resource Controller,
IAM Identity and the Runtime API), and really runs circuits on noisy Aer simulators of the
client's fake backends. It never sees a key, only its SHA-256 digest, and imports neither the
launcher nor the inside of the sandbox. Start it with ``python -m qsandbox.platform serve``.

The modules: `app` (the FastAPI app), `tls` (its per-run CA), `config` (its settings), `auth` and
`iam` (keys, tokens, IAM Identity), `cloud` (Global Search, Global Catalog, Resource Controller),
`runtime` (the Runtime API), `programs` (the sampler and estimator), `noise_learner_v3`,
`simulation` and `backends` (Aer on the fake devices), `state` (jobs and sessions per tenant),
`errors` (IBM's error bodies); `__main__` serves it.
"""
