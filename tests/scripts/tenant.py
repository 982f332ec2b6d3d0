"""Two keys on one shared platform: what does one see of the other's jobs?

    tenant.py submit               a Bell job in a batch session; prints "job: ID", "session: ID"
    tenant.py probe JOB SESSION    with another key: the client's and the REST API's answers for
                                   that job and session, then tries to delete the job; and the
                                   former admin view, without a token
    tenant.py check JOB SESSION    with the first key again: is the job still there, with its result?

Each line is "what: answer" (an HTTP status, True/False, or the client's exception name).
"""

import sys
import warnings

import requests
from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import Batch, QiskitRuntimeService, SamplerV2
from qiskit_ibm_runtime.accounts import AccountManager

warnings.filterwarnings("ignore", category=DeprecationWarning)
QUANTUM = "https://quantum.cloud.ibm.com/api/v1"
service = QiskitRuntimeService()


def rest() -> dict[str, str]:
    """The headers of a REST call, with a token from IAM for the saved account's key."""
    account = AccountManager.get()
    minted = requests.post(
        "https://iam.cloud.ibm.com/identity/token",
        data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": account.token},
        timeout=30,
    )
    minted.raise_for_status()
    return {"Authorization": f"Bearer {minted.json()['access_token']}", "Service-CRN": account.instance}


def client(what: str, call) -> None:
    try:
        call()
        print(f"{what}: ok", flush=True)
    except Exception as e:  # noqa: BLE001 - the exception's name is the answer
        print(f"{what}: {type(e).__name__}", flush=True)


mode = sys.argv[1]
if mode == "submit":
    backend = service.backend(sorted(b.name for b in service.backends())[0])
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend).run(bell)
    with Batch(backend=backend) as batch:
        job = SamplerV2(mode=batch).run([isa], shots=100)
        job.result()
        print("job:", job.job_id())
        print("session:", batch.session_id)
    sys.exit(0)

job_id, session_id = sys.argv[2], sys.argv[3]
headers = rest()
if mode == "probe":
    listed = requests.get(
        f"{QUANTUM}/jobs", headers=headers, params={"limit": "100", "exclude_params": "false"}, timeout=30
    )
    print("list status:", listed.status_code)
    print("listed:", job_id in listed.text)
    print("any params:", any("params" in j for j in listed.json().get("jobs", [])))
    client("client job", lambda: service.job(job_id))
    for what, path in (
        ("job", f"/jobs/{job_id}"),
        ("results", f"/jobs/{job_id}/results"),
        ("metrics", f"/jobs/{job_id}/metrics"),
        ("session", f"/sessions/{session_id}"),
    ):
        print(f"GET {what}:", requests.get(QUANTUM + path, headers=headers, timeout=30).status_code)
    usage = requests.get(f"{QUANTUM}/instances/usage", headers=headers, timeout=30).json()
    print("usage:", usage["usage_consumed_seconds"])
    for path in ("/_qsandbox/jobs", "/_qsandbox/health"):
        for host in ("quantum.cloud.ibm.com", "iam.cloud.ibm.com"):
            answer = requests.get(f"https://{host}{path}", headers={"X-Qsandbox-Admin": "1"}, timeout=30)
            print(f"admin {host}{path}:", answer.status_code)
    client("client delete", lambda: service.delete_job(job_id))
    print("DELETE job:", requests.delete(f"{QUANTUM}/jobs/{job_id}", headers=headers, timeout=30).status_code)
elif mode == "check":
    job = service.job(job_id)
    print("status:", job.status())
    print("shots:", sum(job.result()[0].data.meas.get_counts().values()))
    print("GET session:", requests.get(f"{QUANTUM}/sessions/{session_id}", headers=headers, timeout=30).status_code)
    usage = requests.get(f"{QUANTUM}/instances/usage", headers=headers, timeout=30).json()
    print("usage:", usage["usage_consumed_seconds"])
