"""Identities of the emulated platform.

Fixed values so that a saved account (channel, instance CRN) stays valid across restarts of the
emulator; the CRN follows the real layout because the client derives the Runtime API host from
its 6th field (the region).
"""

ACCOUNT_ID = "5a1e0c0ffee0c0ffee0c0ffee0c0ffee"
"""32 hex digits, like an IBM Cloud account id."""

INSTANCE_GUID = "8d6c4c3e-7f0b-4b55-9a4f-2f1e3c5d7a90"

INSTANCE_CRN = f"crn:v1:bluemix:public:quantum-computing:us-east:a/{ACCOUNT_ID}:{INSTANCE_GUID}::"

INSTANCE_NAME = "qsandbox-local"

PLAN_ID = "850b1e31-5d86-4d1c-a67a-0b9d3f4e2f62"
"""Global Catalog id of the plan; Global Search points at it via ``service_plan_unique_id``."""

PLAN_NAME = "Open"
"""Display name of the plan (the client lower-cases it)."""

PLAN_PRICING_TYPE = "free"

DEFAULT_BACKENDS = ("FakeManilaV2", "FakeNairobiV2", "FakeKolkataV2")
"""5, 7 and 27 qubits. A 127-qubit fake (FakeSherbrooke) takes about 1.5 s per noisy
2-qubit run on Aer, so the largest default is 27 qubits (about 0.3 s)."""

DEFAULT_TOKEN_TTL = 3600

HOSTNAMES = (
    "iam.cloud.ibm.com",
    "api.global-search-tagging.cloud.ibm.com",
    "globalcatalog.cloud.ibm.com",
    "quantum.cloud.ibm.com",
    "us-east.quantum.cloud.ibm.com",
    "eu-de.quantum.cloud.ibm.com",
    "resource-controller.cloud.ibm.com",
)
"""Every host name the client derives from the default ``https://cloud.ibm.com``."""
