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

PLAN_USAGE_LIMIT_SECONDS = 36000
"""QPU seconds per usage period reported for the instance (reported, never enforced)."""

SMALL_BACKENDS = ("FakeManilaV2", "FakeNairobiV2", "FakeKolkataV2")
"""5, 7 and 27 qubits, under the fakes' own names (fake_manila, ...)."""

FLEET = (
    "ibm_torino=FakeTorino",
    "ibm_fez=FakeFez",
    "ibm_marrakesh=FakeMarrakesh",
    "ibm_kingston=FakeKingston",
    "ibm_aachen=FakeAachen",
    "ibm_brisbane=FakeBrisbane",
    "ibm_sherbrooke=FakeSherbrooke",
)
"""IBM's real device names, each served from the fake backend with that device's snapshot:
Heron r1 (torino, 133 qubits), Heron r2 (fez, marrakesh, kingston, aachen, 156 qubits) and
Eagle r3 (brisbane, sherbrooke, 127 qubits). A job simulates only the qubits it touches, so a
Bell pair on ibm_fez runs as fast as on fake_manila."""

DEFAULT_BACKENDS = SMALL_BACKENDS + FLEET

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
