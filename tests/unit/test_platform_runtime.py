"""Runtime API of the emulated platform, driven with the client's own encoders and decoders."""

import json
import secrets
import time
import warnings

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder
from qiskit_ibm_runtime.decoders.executor.decoder import ExecutorResultDecoder
from qiskit_ibm_runtime.fake_provider import FakeManilaV2
from qiskit_ibm_runtime.options_models import ExecutorOptions
from qiskit_ibm_runtime.quantum_program import QuantumProgram
from qiskit_ibm_runtime.quantum_program.params_converters import (
    QUANTUM_PROGRAM_PARAMS_CONVERTERS,
)
from qiskit_ibm_runtime.utils.backend_decoder import (
    configuration_from_server_data,
    properties_from_server_data,
)
from samplomatic.quantum_program import CircuitItem

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # starlette: "install httpx2" (import time)
    from fastapi.testclient import TestClient

from qsandbox.common import platform_constants as constants
from qsandbox.platform.app import PlatformConfig, create_app

QUANTUM = "quantum.cloud.ibm.com"
FINAL = ("Completed", "Failed", "Cancelled")


@pytest.fixture(scope="module")
def client():
    config = PlatformConfig(backends=("FakeManilaV2", "FakeNairobiV2"))
    with TestClient(create_app(config)) as c:
        yield c


@pytest.fixture(scope="module")
def headers(client):
    response = client.post(
        "/identity/token",
        headers={"Host": "iam.cloud.ibm.com"},
        data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": secrets.token_urlsafe(32)},
    )
    return {
        "Host": QUANTUM,
        "Authorization": f"Bearer {response.json()['access_token']}",
        "Service-CRN": constants.INSTANCE_CRN,
    }


@pytest.fixture(scope="module")
def bell():
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    return generate_preset_pass_manager(optimization_level=1, backend=FakeManilaV2()).run(circuit)


@pytest.fixture(scope="module")
def bell_measured():
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()
    return generate_preset_pass_manager(optimization_level=1, backend=FakeManilaV2()).run(circuit)


def submit(client, headers, program_id, params, backend="fake_manila", **extra):
    body = json.dumps({"program_id": program_id, "backend": backend, "params": params, **extra}, cls=RuntimeEncoder)
    response = client.post("/api/v1/jobs", headers=headers, content=body)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def wait_final(client, headers, job_id, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers, params={"exclude_params": "true"}).json()
        if job["state"]["status"] in FINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not final after {timeout} s")


def results(client, headers, job_id):
    response = client.get(f"/api/v1/jobs/{job_id}/results", headers=headers)
    assert response.status_code == 200
    return response.text


# -- authentication and routing ---------------------------------------------------------------


def test_runtime_api_requires_token_and_instance(client, headers):
    assert client.get("/api/v1/backends", headers=headers).status_code == 200
    no_token = {k: v for k, v in headers.items() if k != "Authorization"}
    assert client.get("/api/v1/backends", headers=no_token).status_code == 401
    for bad in ("Bearer not-a-jwt", f"apikey {secrets.token_urlsafe(32)}"):
        response = client.get("/api/v1/backends", headers={**headers, "Authorization": bad})
        assert response.status_code == 401
    wrong_crn = constants.INSTANCE_CRN.replace(constants.INSTANCE_GUID, "0" * 36)
    assert client.get("/api/v1/backends", headers={**headers, "Service-CRN": wrong_crn}).status_code == 403
    no_crn = {k: v for k, v in headers.items() if k != "Service-CRN"}
    assert client.get("/api/v1/jobs", headers=no_crn).status_code == 403


def test_host_decides_between_catalog_and_runtime(client, headers):
    path = f"/api/v1/{constants.PLAN_ID}"
    catalog = client.get(path, headers={**headers, "Host": "globalcatalog.cloud.ibm.com"})
    assert catalog.status_code == 200
    assert catalog.json()["overview_ui"]["en"]["display_name"] == constants.PLAN_NAME
    assert catalog.json()["metadata"]["pricing"]["type"] == constants.PLAN_PRICING_TYPE
    assert client.get(path, headers=headers).status_code == 404
    search = client.post(
        "/v3/resources/search?limit=100",
        json={"query": "x"},
        headers={**headers, "Host": "api.global-search-tagging.cloud.ibm.com"},
    )
    [item] = search.json()["items"]
    assert item["crn"] == constants.INSTANCE_CRN and item["doc"]["extensions"]


def test_no_admin_or_health_view(client, headers, bell_measured):
    """A shared emulator's callers are different users: nothing answers without a token."""
    submit(client, headers, "sampler", {"pubs": [SamplerPub.coerce((bell_measured, None, 10))]})
    for path in ("/_qsandbox/jobs", "/_qsandbox/health", "/_svc/quantum/api/v1/jobs"):
        for host in ("localhost", QUANTUM, "iam.cloud.ibm.com"):
            for extra in ({}, {"X-Qsandbox-Admin": "1"}):
                response = client.get(path, headers={"Host": host, **extra})
                assert response.status_code == 404, (path, host, response.text)
                assert "jobs" not in response.json()
    no_token = {k: v for k, v in headers.items() if k != "Authorization"}
    assert client.get("/api/v1/jobs", headers=no_token).status_code == 401


def _key_headers(client, key):
    response = client.post(
        "/identity/token",
        headers={"Host": "iam.cloud.ibm.com"},
        data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": key},
    )
    assert response.status_code == 200, response.text
    return {
        "Host": QUANTUM,
        "Authorization": f"Bearer {response.json()['access_token']}",
        "Service-CRN": constants.INSTANCE_CRN,
    }


def test_each_key_is_a_tenant_of_its_own(client, headers, bell_measured):
    """Jobs, sessions, results and usage belong to the key that made them (with the keys it makes
    through IAM Identity); another key gets the 404 of a job that does not exist, and changes nothing."""
    params = {"pubs": [SamplerPub.coerce((bell_measured, None, 50))]}
    session = client.post("/api/v1/sessions", headers=headers, json={"mode": "batch", "backend": "fake_manila"}).json()
    tag = secrets.token_hex(4)
    mine = submit(client, headers, "sampler", params, session_id=session["id"], tags=[tag])
    assert wait_final(client, headers, mine)["state"]["status"] == "Completed"
    own_usage = client.get("/api/v1/instances/usage", headers=headers).json()["usage_consumed_seconds"]
    assert own_usage >= 1

    other = _key_headers(client, secrets.token_urlsafe(32))
    listed = client.get("/api/v1/jobs", headers=other, params={"exclude_params": "false"}).json()
    assert listed["count"] == 0 and listed["jobs"] == []
    assert client.get("/api/v1/jobs", headers=other, params={"tags": [tag]}).json()["count"] == 0
    missing = client.get(f"/api/v1/jobs/{'0' * 20}", headers=other)
    for method, path in (
        ("GET", f"/api/v1/jobs/{mine}"),
        ("GET", f"/api/v1/jobs/{mine}/results"),
        ("GET", f"/api/v1/jobs/{mine}/metrics"),
        ("GET", f"/api/v1/jobs/{mine}/logs"),
        ("GET", f"/api/v1/jobs/{mine}/interim_results"),
        ("POST", f"/api/v1/jobs/{mine}/cancel"),
        ("PUT", f"/api/v1/jobs/{mine}/tags"),
        ("DELETE", f"/api/v1/jobs/{mine}"),
        ("GET", f"/api/v1/sessions/{session['id']}"),
        ("PATCH", f"/api/v1/sessions/{session['id']}"),
        ("DELETE", f"/api/v1/sessions/{session['id']}/close"),
    ):
        response = client.request(method, path, headers=other, json={"tags": [], "accepting_jobs": False})
        assert response.status_code == 404, (method, path, response.text)
        # the same answer as for a job that does not exist at all, but for the id in it
        assert response.json()["errors"][0]["code"] in ("job_not_found", "session_not_found")
        assert mine not in response.text.replace(f"Job {mine} not found.", "")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "job_not_found"
    into = client.post(
        "/api/v1/jobs",
        headers=other,
        content=json.dumps(
            {"program_id": "sampler", "backend": "fake_manila", "params": {}, "session_id": session["id"]}
        ),
    )
    assert into.status_code == 404
    assert client.get("/api/v1/instances/usage", headers=other).json()["usage_consumed_seconds"] == 0

    # untouched for its owner
    job = client.get(f"/api/v1/jobs/{mine}", headers=headers).json()
    assert job["state"]["status"] == "Completed" and job["tags"] == [tag]
    assert client.get(f"/api/v1/jobs/{mine}/results", headers=headers).status_code == 200
    assert client.get(f"/api/v1/sessions/{session['id']}", headers=headers).json()["accepting_jobs"] is True
    assert client.get("/api/v1/jobs", headers=headers, params={"tags": [tag]}).json()["count"] == 1

    # a key the owner makes through IAM Identity is the owner's too
    iam = {"Host": "iam.cloud.ibm.com", "Authorization": headers["Authorization"]}
    made = client.post("/v1/apikeys", headers=iam, json={"name": "second", "iam_id": _iam_id(headers)})
    assert made.status_code == 201, made.text
    second = _key_headers(client, made.json()["apikey"])
    assert client.get(f"/api/v1/jobs/{mine}", headers=second).status_code == 200


def _iam_id(headers):
    import jwt

    token = headers["Authorization"].removeprefix("Bearer ")
    return jwt.decode(token, options={"verify_signature": False})["iam_id"]


# -- backends ---------------------------------------------------------------------------------


def test_backends_decodable_by_client(client, headers):
    devices = client.get("/api/v1/backends", headers=headers).json()["devices"]
    assert [(d["name"], d["qubits"]) for d in devices] == [("fake_manila", 5), ("fake_nairobi", 7)]
    assert all(d["status"]["name"] == "online" for d in devices)
    for device in devices:
        raw = client.get(f"/api/v1/backends/{device['name']}/configuration", headers=headers)
        config = configuration_from_server_data(raw.json())
        assert config is not None and config.n_qubits == device["qubits"]
        assert config.backend_name == device["name"]
        raw = client.get(f"/api/v1/backends/{device['name']}/properties", headers=headers)
        assert len(properties_from_server_data(raw.json()).qubits) == device["qubits"]
        status = client.get(f"/api/v1/backends/{device['name']}/status", headers=headers).json()
        assert status["state"] is True and status["status"] == "active"
    assert client.get("/api/v1/backends/ibm_nowhere/status", headers=headers).status_code == 404


# -- programs ---------------------------------------------------------------------------------


def test_sampler_bell_counts(client, headers, bell_measured):
    params = {"pubs": [SamplerPub.coerce((bell_measured, None, 2000))], "version": 2}
    job_id = submit(client, headers, "sampler", params)
    assert wait_final(client, headers, job_id)["state"]["status"] == "Completed"
    result = json.loads(results(client, headers, job_id), cls=RuntimeDecoder)
    counts = result[0].data.meas.get_counts()
    assert sum(counts.values()) == 2000
    for outcome in ("00", "11"):
        assert 800 < counts.get(outcome, 0) < 1200
    assert counts.get("01", 0) + counts.get("10", 0) < 300
    [span] = result.metadata["execution"]["execution_spans"]
    assert span.size == 2000


def test_estimator_expectation_values(client, headers, bell):
    observables = [SparsePauliOp(p).apply_layout(bell.layout) for p in ("ZZ", "ZI")]
    params = {"pubs": [EstimatorPub.coerce((bell, observables))], "version": 2}
    job_id = submit(client, headers, "estimator", params)
    assert wait_final(client, headers, job_id)["state"]["status"] == "Completed"
    result = json.loads(results(client, headers, job_id), cls=RuntimeDecoder)
    zz, zi = result[0].data.evs
    assert zz > 0.7 and abs(zi) < 0.2


def test_executor_quantum_program(client, headers, bell_measured):
    program = QuantumProgram(shots=1000, items=[CircuitItem(bell_measured)])
    converter = QUANTUM_PROGRAM_PARAMS_CONVERTERS["v2.0"]
    params = converter.encoder(program, ExecutorOptions()).model_dump(mode="json")
    job_id = submit(client, headers, "executor", params)
    assert wait_final(client, headers, job_id)["state"]["status"] == "Completed"
    result = ExecutorResultDecoder.decode(results(client, headers, job_id))
    bits = result[0]["meas"]
    assert bits.shape == (1000, 2)
    assert np.mean(bits[:, 0] == bits[:, 1]) > 0.85


def test_bad_input_fails_job_with_reason(client, headers):
    job_id = submit(client, headers, "sampler", {"pubs": [["not a circuit"]]})
    state = wait_final(client, headers, job_id)["state"]
    assert state["status"] == "Failed" and "sampler input" in state["reason"]
    assert (
        client.post(
            "/api/v1/jobs",
            headers=headers,
            content=json.dumps({"program_id": "nope", "backend": "fake_manila", "params": {}}),
        ).status_code
        == 404
    )


# -- job control ------------------------------------------------------------------------------


def test_cancel_semantics(client, headers, bell_measured):
    params = {"pubs": [SamplerPub.coerce((bell_measured, None, 100))]}
    done = submit(client, headers, "sampler", params)
    wait_final(client, headers, done)
    assert client.post(f"/api/v1/jobs/{done}/cancel", headers=headers).status_code == 409

    device = client.app.state.platform.devices.get("fake_manila")
    with device.lock:  # the device is busy: the next job stays queued
        queued = submit(client, headers, "sampler", params)
        assert client.post(f"/api/v1/jobs/{queued}/cancel", headers=headers).status_code == 204
    assert wait_final(client, headers, queued)["state"]["status"] == "Cancelled"
    time.sleep(0.2)
    assert client.app.state.platform.store._jobs[queued].running_at is None  # never ran
    assert client.post(f"/api/v1/jobs/{queued}/cancel", headers=headers).status_code == 409
    response = client.get(f"/api/v1/jobs/{queued}/results", headers=headers)
    assert response.status_code == 404


def test_job_list_filters_and_sessions(client, headers, bell_measured):
    params = {"pubs": [SamplerPub.coerce((bell_measured, None, 50))]}
    session = client.post(
        "/api/v1/sessions", headers=headers, json={"mode": "batch", "backend": "fake_manila", "max_ttl": 600}
    ).json()
    tag = secrets.token_hex(4)
    ids = [submit(client, headers, "sampler", params, session_id=session["id"], tags=[tag]) for _ in range(3)]
    for job_id in ids:
        wait_final(client, headers, job_id)

    def listing(**query):
        return client.get("/api/v1/jobs", headers=headers, params=query).json()

    by_session = listing(session_id=session["id"])
    assert by_session["count"] == 3 and {j["id"] for j in by_session["jobs"]} == set(ids)
    page = listing(tags=[tag], limit=2, offset=1, sort="ASC")
    assert page["count"] == 3 and [j["id"] for j in page["jobs"]] == ids[1:]
    assert listing(tags=[tag], pending="true")["count"] == 0
    assert listing(tags=[tag], backend="fake_nairobi")["count"] == 0
    assert listing(tags=[tag], program="sampler", created_after="2000-01-01T00:00:00+00:00")["count"] == 3
    assert listing(tags=[tag], created_before="2000-01-01T00:00:00+00:00")["count"] == 0

    details = client.get(f"/api/v1/sessions/{session['id']}", headers=headers).json()
    assert details["mode"] == "batch" and details["accepting_jobs"] is True
    assert (
        client.patch(f"/api/v1/sessions/{session['id']}", headers=headers, json={"accepting_jobs": False}).status_code
        == 204
    )
    closed = client.post(
        "/api/v1/jobs",
        headers=headers,
        content=json.dumps(
            {"program_id": "sampler", "backend": "fake_manila", "params": {}, "session_id": session["id"]}
        ),
    )
    assert closed.status_code == 400
    assert client.delete(f"/api/v1/sessions/{session['id']}/close", headers=headers).status_code == 204
    assert client.get(f"/api/v1/sessions/{session['id']}", headers=headers).json()["state"] == "closed"
