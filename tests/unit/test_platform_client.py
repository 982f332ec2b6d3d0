"""The emulated platform driven by the real qiskit-ibm-runtime client, as a script would drive it.

The emulator runs as ``python -m qsandbox.platform serve`` (a subprocess, TLS with its own CA) on
127.0.0.1; this process's connections to ``*.cloud.ibm.com:443`` are sent to it at the socket
level, so the client derives IBM's real host names and checks TLS against them, unchanged.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import urllib3.util.connection as urllib3_connection
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qsandbox.common import platform_constants as constants

warnings.filterwarnings("ignore", category=DeprecationWarning)  # SamplerV2/EstimatorV2 since 0.50

READY = "qsandbox-platform ready"


class Emulator:
    def __init__(self, port: int, ca: Path, proc: subprocess.Popen[str], startup: float) -> None:
        self.port, self.ca, self.proc, self.startup = port, ca, proc, startup
        self.output: list[str] = []


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Emulator:
    port = _free_port()
    ca = tmp / f"ca-{port}.pem"
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qsandbox.platform",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ca-out",
            str(ca),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if READY in line:
            break
    else:
        raise AssertionError(f"emulator did not start (exit {proc.wait()})")
    emu = Emulator(port, ca, proc, time.monotonic() - started)
    threading.Thread(target=_drain, args=(proc, emu), daemon=True).start()  # a full pipe would block it
    return emu


def _drain(proc: subprocess.Popen[str], emu: Emulator) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        emu.output.append(line)


def stop_emulator(emulator: Emulator) -> None:
    emulator.proc.send_signal(signal.SIGTERM)
    try:
        emulator.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        emulator.proc.kill()
        emulator.proc.wait()
    if emulator.proc.stdout is not None:
        emulator.proc.stdout.close()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    # 256 MiB for simulations: a 27-qubit state (2 GiB) must be refused, a few qubits must run.
    emu = start_emulator(tmp_path_factory.mktemp("emulator"), env={"QSANDBOX_PLATFORM_SIM_MEMORY": str(256 << 20)})
    yield emu
    stop_emulator(emu)


class _Redirect:
    """Send this process's connections to *.cloud.ibm.com:443 to the emulator's port."""

    def __init__(self) -> None:
        self.port = 0
        self.original = urllib3_connection.create_connection

    def __call__(self, address, *args, **kwargs):  # type: ignore[no-untyped-def]
        host, port = address
        if (host == "cloud.ibm.com" or host.endswith(".cloud.ibm.com")) and int(port) == 443 and self.port:
            address = ("127.0.0.1", self.port)
        return self.original(address, *args, **kwargs)


_REDIRECT = _Redirect()


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``use(emulator)`` points the client at that emulator for the test."""

    def point(emu: Emulator) -> None:
        monkeypatch.setattr(urllib3_connection, "create_connection", _REDIRECT)
        monkeypatch.setattr(_REDIRECT, "port", emu.port)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca))
        for name in ("QISKIT_IBM_TOKEN", "QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL", "QISKIT_IBM_URL"):
            monkeypatch.delenv(name, raising=False)

    return point


def service(instance: str = constants.INSTANCE_CRN):  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import QiskitRuntimeService

    return QiskitRuntimeService(channel="ibm_quantum_platform", token=secrets.token_urlsafe(32), instance=instance)


@pytest.fixture
def svc(emulator: Emulator, use):  # type: ignore[no-untyped-def]
    use(emulator)
    return service()


def bell(backend, measure: bool = True) -> QuantumCircuit:  # type: ignore[no-untyped-def]
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    if measure:
        circuit.measure_all()
    return generate_preset_pass_manager(optimization_level=1, backend=backend).run(circuit)


def assert_bell(counts: dict[str, int], shots: int) -> None:
    """A Bell pair's counts, with a bound from the shot count: 00 within six standard deviations
    of half (a fair binomial), plus the noise's share; 01 and 10 rare."""
    assert sum(counts.values()) == shots
    assert (counts.get("00", 0) + counts.get("11", 0)) / shots > 0.85, counts
    slack = 6 * (0.25 / shots) ** 0.5 + 0.075
    assert abs(counts.get("00", 0) / shots - 0.5) < slack, (counts, slack)


# -- gaps found by the client's own integration suite -------------------------------------------


def test_instance_by_name_and_resource_instance_by_crn(emulator, use):  # type: ignore[no-untyped-def]
    """(c) an instance given by name resolves; GET /v2/resource_instances/{crn} answers."""
    from ibm_cloud_sdk_core import ApiException
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
    from ibm_platform_services import ResourceControllerV2

    use(emulator)
    by_name = service(instance=constants.INSTANCE_NAME)
    assert by_name.active_account()["instance"] == constants.INSTANCE_CRN
    client = ResourceControllerV2(authenticator=IAMAuthenticator(secrets.token_urlsafe(32)))
    client.set_service_url("https://resource-controller.cloud.ibm.com")
    assert client.get_resource_instance(id=constants.INSTANCE_CRN).get_result()["name"] == constants.INSTANCE_NAME
    assert client.get_resource_instance(id=constants.INSTANCE_GUID).get_result()["crn"] == constants.INSTANCE_CRN
    with pytest.raises(ApiException) as refused:
        client.get_resource_instance(id=constants.INSTANCE_CRN.replace(constants.INSTANCE_GUID, "0" * 36))
    assert refused.value.status_code == 404


def test_extra_plans_add_instances_the_client_selects_by_plan_and_name(tmp_path, use):  # type: ignore[no-untyped-def]
    """QSANDBOX_PLATFORM_EXTRA_PLANS: one more instance per plan; plans_preference and names pick it."""
    from qiskit_ibm_runtime import IBMInputValueError, QiskitRuntimeService

    emu = start_emulator(tmp_path, env={"QSANDBOX_PLATFORM_EXTRA_PLANS": "internal"})
    try:
        use(emu)
        token = secrets.token_urlsafe(32)
        everything = QiskitRuntimeService(channel="ibm_quantum_platform", token=token)
        plans = {i["plan"]: i for i in everything.instances()}
        assert set(plans) == {constants.PLAN_NAME.lower(), "internal"}, plans
        internal = plans["internal"]
        assert internal["crn"] != constants.INSTANCE_CRN and internal["name"] == "qsandbox-internal"
        # no preference: free and trial first, as on IBM
        assert everything._backend_instance_groups[0]["plan"] == constants.PLAN_NAME.lower()
        preferring = QiskitRuntimeService(channel="ibm_quantum_platform", token=token, plans_preference=["internal"])
        assert preferring._backend_instance_groups[0]["plan"] == "internal"
        by_name = QiskitRuntimeService(channel="ibm_quantum_platform", token=token, instance="qsandbox-internal")
        assert by_name.active_account()["instance"] == internal["crn"]
        job = by_name.backend("fake_manila")  # the instance serves the devices and keeps its own jobs
        from qiskit_ibm_runtime import SamplerV2

        submitted = SamplerV2(mode=job).run([bell(job)], shots=50)
        assert sum(submitted.result()[0].data.meas.get_counts().values()) == 50
        assert [j.job_id() for j in by_name.jobs()] == [submitted.job_id()]
        assert not service().jobs()  # the first instance saw none of it
        with pytest.raises(IBMInputValueError):
            QiskitRuntimeService(channel="ibm_quantum_platform", token=token, plans_preference=["premium"])
    finally:
        stop_emulator(emu)


def test_dry_run_goes_to_the_mock_twin_listed_only_with_mocks(svc):  # type: ignore[no-untyped-def]
    """`run(..., dry_run=True)` runs on `mock_fez`, IBM's twin of `ibm_fez`; mocks show only when asked for."""
    from qiskit_ibm_runtime import SamplerV2

    assert not any(b.name.startswith("mock_") for b in svc.backends())
    with_mocks = {b.name: b for b in svc.backends(include_mocks=True)}
    assert with_mocks["mock_fez"].is_mock and not with_mocks["ibm_fez"].is_mock
    assert "mock_manila" not in with_mocks  # twins only for IBM's own names
    backend = svc.backend("ibm_fez")
    job = SamplerV2(mode=backend).run([bell(backend)], shots=100, dry_run=True)
    assert job.backend().name == "mock_fez"
    assert_bell(job.result()[0].data.meas.get_counts(), 100)
    real = SamplerV2(mode=backend).run([bell(backend)], shots=100)
    real.result()
    assert [j.job_id() for j in svc.jobs(limit=1)] == [real.job_id()]
    listed = [j.job_id() for j in svc.jobs(limit=5, include_mocks=True)]
    assert job.job_id() in listed and job.job_id() not in [j.job_id() for j in svc.jobs(limit=50)]


def test_delete_job(svc):  # type: ignore[no-untyped-def]
    """(d) DELETE /jobs/{id}: the job is gone afterwards."""
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import RuntimeJobNotFound

    backend = svc.backend("fake_manila")
    job = SamplerV2(mode=backend).run([bell(backend)], shots=100)
    job.result()
    svc.delete_job(job.job_id())
    with pytest.raises(RuntimeJobNotFound):
        svc.job(job.job_id())
    with pytest.raises(RuntimeJobNotFound):
        svc.delete_job(job.job_id())


def test_usage_reports_remaining_seconds(svc):  # type: ignore[no-untyped-def]
    """(e) usage_remaining_seconds is an int, limit minus consumed."""
    usage = svc.usage()
    assert isinstance(usage["usage_remaining_seconds"], int)
    assert usage["usage_remaining_seconds"] == usage["usage_limit_seconds"] - usage["usage_consumed_seconds"]
    assert usage["usage_limit_reached"] is False


def test_calibration_id(svc, caplog):  # type: ignore[no-untyped-def]
    """(f) an unknown calibration id is not found; the device's own one is."""
    import logging

    from qiskit.providers.exceptions import QiskitBackendNotFoundError

    with caplog.at_level(logging.WARNING, logger="qiskit_ibm_runtime"), pytest.raises(QiskitBackendNotFoundError):
        svc.backend("fake_manila", calibration_id="invalid_id")
    assert "invalid_id" in caplog.text
    good = svc.backend("fake_manila").properties().to_dict().get("calibration_id")
    assert good and svc.backend("fake_manila", calibration_id=good).num_qubits == 5


def test_private_job_hides_params_and_hands_out_results_once(svc):  # type: ignore[no-untyped-def]
    """(g) a private job returns no params, and its results only once."""
    from qiskit_ibm_runtime import SamplerV2

    backend = svc.backend("fake_manila")
    sampler = SamplerV2(mode=backend)
    sampler.options.environment.private = True
    job = sampler.run([bell(backend)], shots=200)
    assert not job.inputs
    first = job.result()
    assert_bell(first[0].data.meas.get_counts(), 200)
    assert not job.result()
    assert svc.job(job.job_id()).private
    public = SamplerV2(mode=backend).run([bell(backend)], shots=10)
    assert public.inputs["pubs"]  # the control: a job that is not private does return them
    assert public.result() and public.result()


def test_estimator_stds_are_arrays_of_the_pub_shape(svc):  # type: ignore[no-untyped-def]
    """(h) 0-d pubs give 0-d arrays, not floats; 1-d pubs give 1-d arrays."""
    from qiskit_ibm_runtime import EstimatorV2

    backend = svc.backend("fake_manila")
    circuit = bell(backend, measure=False)
    zz = SparsePauliOp("ZZ").apply_layout(circuit.layout)
    result = EstimatorV2(mode=backend).run([(circuit, zz), (circuit, [zz, zz])]).result()
    scalar, vector = result[0].data, result[1].data
    assert isinstance(scalar.stds, np.ndarray) and scalar.stds.shape == () and scalar.evs.shape == ()
    assert vector.stds.shape == (2,) and vector.evs.shape == (2,)
    assert float(scalar.evs) > 0.7


def test_wide_observable_on_27_qubits_runs_and_options_are_recorded(svc):  # type: ignore[no-untyped-def]
    """(i) X on all 27 qubits after a 3-qubit circuit: seconds, not a dead process."""
    from qiskit_ibm_runtime import EstimatorV2

    backend = svc.backend("fake_kolkata")
    circuit = QuantumCircuit(3)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend).run(circuit)
    assert isa.num_qubits == 27
    physical = isa.layout.final_index_layout()  # virtual qubit -> physical qubit
    labels = ["Z"] * 27
    labels[26 - physical[2]] = "I"  # Z on every qubit but one of the GHZ's: parity +1
    z_all = SparsePauliOp("".join(labels))
    x_all = SparsePauliOp("X" * 27)
    readout = backend.target["measure"]
    idle = [q for q in range(27) if q not in physical]
    expected = float(np.prod([1 - 2 * readout[(q,)].error for q in idle]))  # each idle Z, read out
    estimator = EstimatorV2(mode=backend)
    estimator.options.resilience_level = 2
    estimator.options.twirling.enable_gates = True
    estimator.options.dynamical_decoupling.enable = True
    job = estimator.run([(isa, [x_all, z_all])])
    result = job.result(timeout=600)  # a deadline for a hang; speed: bench/bench.py's `emulator`
    evs = result[0].data.evs
    assert evs[0] == 0.0  # X on a qubit left in |0>
    assert 0.75 * expected < evs[1] < 1.02 * expected, (evs[1], expected)
    recorded = result.metadata
    assert recorded["resilience_level"] == 2
    assert recorded["twirling"]["enable_gates"] is True
    assert recorded["dynamical_decoupling"]["enable"] is True
    assert len(recorded["qsandbox"]["simulated_qubits"]) == 3
    logs = job.logs()
    for words in ("twirling", "dynamical decoupling", "resilience level 2", "idle"):
        assert words in logs, logs
    plain = EstimatorV2(mode=backend)
    plain.options.resilience_level = 0
    job = plain.run([(isa, z_all)])
    job.result()
    assert "twirling" not in job.logs() and "resilience" not in job.logs()


def test_circuit_too_large_fails_as_a_job_error_and_the_platform_lives_on(svc):  # type: ignore[no-untyped-def]
    """A 27-qubit GHZ needs a 2 GiB state: the job fails saying so (this emulator has 256 MiB)."""
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

    backend = svc.backend("fake_kolkata")
    ghz = QuantumCircuit(27)
    ghz.h(0)
    for q in range(26):
        ghz.cx(q, q + 1)
    ghz.measure_all()
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend).run(ghz)
    job = SamplerV2(mode=backend).run([isa], shots=10)
    with pytest.raises(RuntimeJobFailureError, match=r"acts on 27 qubits.*2\.0 GiB"):
        job.result(timeout=60)
    small = SamplerV2(mode=backend).run([bell(backend)], shots=200)
    assert_bell(small.result()[0].data.meas.get_counts(), 200)


def test_measuring_every_qubit_of_a_wide_device_runs_in_independent_parts(svc):  # type: ignore[no-untyped-def]
    """A Bell pair measured with all 27 qubits of fake_kolkata: 27 qubits do not fit this emulator's
    256 MiB as one state, but the 25 idle ones are independent of the pair and of each other."""
    from qiskit_ibm_runtime import SamplerV2

    backend = svc.backend("fake_kolkata")
    circuit = bell(backend, measure=False)
    circuit.measure_all()  # after transpiling: every physical qubit is measured
    assert circuit.num_clbits == 27
    bits = SamplerV2(mode=backend).run([circuit], shots=2000).result(timeout=600)[0].data.meas  # speed: bench/
    array = bits.to_bool_array(order="little")  # column q is physical qubit q
    pair = [circuit.layout.final_index_layout()[i] for i in (0, 1)]
    agree = np.mean(array[:, pair[0]] == array[:, pair[1]])
    ones = np.mean(array[:, pair[0]])
    shots = len(array)
    assert agree > 0.85 and abs(ones - 0.5) < 6 * (0.25 / shots) ** 0.5 + 0.075, (agree, ones, shots)
    idle = [q for q in range(27) if q not in pair]
    flips = array[:, idle].mean(axis=0)
    readout = backend.target["measure"]
    assert flips.max() < 0.12 and flips.mean() < 0.05  # |0>, read out through readout errors
    assert flips.mean() > 0.2 * np.mean([readout[(q,)].error for q in idle])  # ... which are simulated


def test_executor_sampler_with_twirling_runs_samplex_items(svc):  # type: ignore[no-untyped-def]
    """(a) the client-side Sampler with gate twirling sends samplex items: they must run."""
    from qiskit.circuit import Parameter
    from qiskit_ibm_runtime.executor_sampler import Sampler
    from qiskit_ibm_runtime.options_models import SamplerOptions

    backend = svc.backend("fake_manila")
    theta = Parameter("theta")
    circuit = QuantumCircuit(2)
    circuit.rx(theta, 0)
    circuit.cx(0, 1)
    circuit.measure_all()
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend).run(circuit)
    options = SamplerOptions()
    options.twirling.enable_gates = True
    options.default_shots = 500
    job = Sampler(backend, options).run([(isa, [[0.0], [np.pi]])])
    result = job.result()
    counts = [result[0].data.meas[i].get_counts() for i in range(2)]
    assert counts[0].get("00", 0) > 400 and counts[1].get("11", 0) > 400, counts


def test_noise_learner_returns_layer_errors_from_the_calibration(svc):  # type: ignore[no-untyped-def]
    """(b) the `noise-learner` program: one Pauli-Lindblad model per unique layer, options echoed."""
    from qiskit_ibm_runtime import NoiseLearner
    from qiskit_ibm_runtime.options import NoiseLearnerOptions
    from qiskit_ibm_runtime.utils.noise_learner_result import LayerError, PauliLindbladError

    backend = svc.backend("ibm_fez")
    one = QuantumCircuit(2)
    one.cz(0, 1)
    three = QuantumCircuit(3)
    three.cz(0, 1)
    three.cz(1, 2)
    three.cz(0, 1)
    circuits = generate_preset_pass_manager(optimization_level=0, backend=backend).run([one, three])
    options = NoiseLearnerOptions()
    options.layer_pair_depths = [0, 1]
    job = NoiseLearner(mode=backend, options=options).run(circuits)
    result = job.result()
    assert len(result) == 3  # cz(0,1) on {0,1}; cz(0,1) and cz(1,2) on {0,1,2}
    for datum in result.data:
        assert isinstance(datum, LayerError) and isinstance(datum.error, PauliLindbladError)
        assert datum.circuit.num_qubits == len(datum.qubits) == datum.error.num_qubits
        assert np.all(datum.error.rates > 0) and np.all(datum.error.rates < 0.01)
    first = result.data[0]
    pair_rate = backend.target["cz"][tuple(first.qubits)].error / 15
    assert np.isclose(first.error.rates.max(), pair_rate)
    assert result.metadata["backend"] == "ibm_fez"
    assert result.metadata["input_options"]["layer_pair_depths"] == [0, 1]
    assert result.metadata["input_options"]["max_layers_to_learn"] == 4
    options.max_layers_to_learn = 1
    assert len(NoiseLearner(mode=backend, options=options).run(circuits).result()) == 1
    assert "noise learning not run" in job.logs()


def test_noise_learner_v3_answers_lindblad_for_gate_boxes_and_trex_for_measure_boxes(svc):  # type: ignore[no-untyped-def]
    """`NoiseLearnerV3` (schema v0.3): one model per boxed instruction, in the results model it decodes."""
    from qiskit.circuit import Parameter
    from qiskit_ibm_runtime import NoiseLearnerV3
    from qiskit_ibm_runtime.results import NoiseLearnerV3Results
    from samplomatic.transpiler import generate_boxing_pass_manager
    from samplomatic.utils import find_unique_box_instructions

    backend = svc.backend("ibm_fez")
    manager = generate_preset_pass_manager(backend=backend, optimization_level=0)
    manager.post_scheduling = generate_boxing_pass_manager(
        enable_gates=True, enable_measures=True, inject_noise_site="after"
    )
    circuit = QuantumCircuit(3)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    circuit.rz(Parameter("theta"), 0)
    circuit.measure_all()
    boxed = manager.run(circuit)
    instructions = find_unique_box_instructions(boxed)
    learner = NoiseLearnerV3(backend)
    learner.options.layer_pair_depths = [0, 2]
    job = learner.run(instructions)
    result = job.result()
    assert isinstance(result, NoiseLearnerV3Results) and len(result.data) == len(instructions) == 3
    protocols = [datum.metadata["learning_protocol"] for datum in result.data]
    assert sorted(protocols) == ["lindblad", "lindblad", "trex"]
    readout = {q: backend.target["measure"][(q,)].error for q in range(backend.num_qubits)}
    for datum, instruction in zip(result.data, instructions, strict=True):
        model = datum.to_pauli_lindblad_map()
        qubits = sorted(boxed.find_bit(q).index for q in instruction.qubits)
        assert model.num_qubits == len(qubits)
        rates = np.asarray(model.rates)
        assert np.all(rates > 0) and np.all(rates < 0.05), rates
        if datum.metadata["learning_protocol"] == "trex":
            assert model.num_terms == len(qubits)  # one bit flip per measured qubit
            p = 0.5 - 0.5 * np.exp(-2 * rates)  # back from rates to flip probabilities
            assert np.allclose(sorted(p), sorted(readout[q] for q in qubits))
        else:
            assert model.num_terms == 3 * len(qubits) + 9  # weight 1 on each qubit, weight 2 on the cz pair
            assert set(datum.metadata["post_selection"]["fraction_kept"]) == {0, 2}
    assert "noise learning not run" in job.logs()


def test_job_that_kills_its_simulation_fails_with_a_message():  # type: ignore[no-untyped-def]
    """A simulation process that dies (OOM killer: SIGKILL) fails its job and says why."""
    from qsandbox.platform.state import _death_reason

    assert "out of memory" in _death_reason(-signal.SIGKILL)
    assert "exit code 3" in _death_reason(3)


# -- IBM's fleet --------------------------------------------------------------------------------


def test_fleet_names_gates_and_least_busy(svc):  # type: ignore[no-untyped-def]
    names = {b.name: b for b in svc.backends()}
    for name, qubits, gate in (
        ("ibm_fez", 156, "cz"),
        ("ibm_marrakesh", 156, "cz"),
        ("ibm_kingston", 156, "cz"),
        ("ibm_torino", 133, "cz"),
        ("ibm_brisbane", 127, "ecr"),
    ):
        assert names[name].num_qubits == qubits
        assert gate in names[name].basis_gates
    assert {"fake_manila", "fake_nairobi", "fake_kolkata"} <= set(names)
    from qiskit_ibm_runtime.fake_provider import FakeBrisbane, FakeFez

    for name, fake in (("ibm_fez", FakeFez()), ("ibm_brisbane", FakeBrisbane())):
        served = svc.backend(name)
        assert set(served.coupling_map.get_edges()) == set(fake.coupling_map.get_edges())
        assert set(served.basis_gates) == set(fake.configuration().basis_gates)
    assert svc.backend("ibm_fez").processor_type["family"] == "Heron"
    assert svc.least_busy(min_num_qubits=100).name.startswith("ibm_")


def test_bell_on_ibm_fez_and_estimator_on_ibm_torino(svc):  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import EstimatorV2, SamplerV2

    fez = svc.backend("ibm_fez")
    circuit = bell(fez)
    counts = SamplerV2(mode=fez).run([circuit], shots=1000).result(timeout=600)[0].data.meas.get_counts()
    assert_bell(counts, 1000)
    torino = svc.backend("ibm_torino")
    circuit = bell(torino, measure=False)
    observables = [SparsePauliOp(p).apply_layout(circuit.layout) for p in ("ZZ", "XX", "ZI")]
    zz, xx, zi = EstimatorV2(mode=torino).run([(circuit, observables)]).result(timeout=600)[0].data.evs
    assert zz > 0.5 and xx > 0.5 and abs(zi) < 0.25  # ideal 1, 1, 0; torino's pair is noisy
    # How fast (goal < 15 s each): bench/bench.py's `emulator` step, not a timed test.


# -- a queue like a busy device's ---------------------------------------------------------------


def test_queue_time_shows_queued_then_running_then_done(tmp_path, use):  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import RuntimeJobTimeoutError

    emu = start_emulator(tmp_path, "--queue-time", "20", env={"QSANDBOX_PLATFORM_BACKENDS": "FakeManilaV2"})
    try:
        use(emu)
        backend = service().backend("fake_manila")
        submitted = time.monotonic()
        job = SamplerV2(mode=backend).run([bell(backend)], shots=100)
        with pytest.raises(RuntimeJobTimeoutError):
            job.result(timeout=5)
        seen: list[tuple[str, float]] = []
        metrics_while_queued = None
        while not seen or seen[-1][0] not in ("DONE", "ERROR", "CANCELLED"):
            status = job.status()
            if not seen or seen[-1][0] != status:
                seen.append((status, time.monotonic() - submitted))
            if status == "QUEUED" and metrics_while_queued is None:
                metrics_while_queued = job.metrics()
            assert time.monotonic() - submitted < 60, seen
            time.sleep(0.25)
        assert [s for s, _ in seen] == ["QUEUED", "RUNNING", "DONE"], seen
        running_at, done_at = seen[1][1], seen[2][1]
        assert 13 < running_at < 18 and 18 < done_at < 26, seen
        assert metrics_while_queued is not None
        assert metrics_while_queued["position_in_queue"] == 1
        assert metrics_while_queued["estimated_start_time"] and metrics_while_queued["timestamps"]["running"] is None
        metrics = job.metrics()
        stamps = metrics["timestamps"]
        assert stamps["created"] < stamps["running"] < stamps["finished"]
        assert metrics["position_in_queue"] is None and metrics["usage"]["status"] == "final"
        assert job.usage() >= 4
        assert_bell(job.result()[0].data.meas.get_counts(), 100)
    finally:
        stop_emulator(emu)


def test_queue_time_option_and_environment(tmp_path):  # type: ignore[no-untyped-def]
    from qsandbox.platform.config import PlatformConfig

    assert PlatformConfig.from_env({"QSANDBOX_PLATFORM_QUEUE_TIME": "7.5"}).queue_time == 7.5
    assert PlatformConfig.from_env({}).queue_time == 0
    with pytest.raises(ValueError):
        PlatformConfig(queue_time=-1)
    help_text = subprocess.run(
        [sys.executable, "-m", "qsandbox.platform", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"--queue-time\s+SECONDS", help_text)


def test_shutdown_kills_running_simulations(tmp_path):  # type: ignore[no-untyped-def]
    """Stopping the emulator must not wait for a long simulation: running jobs are cancelled."""
    import multiprocessing

    from qsandbox.platform.state import CANCELLED, RUNNING, Job, Store

    store = Store()
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,), daemon=True)
    child.start()
    job = Job(
        id="j",
        program_id="sampler",
        backend="b",
        owner="t",
        crn="c",
        body="",
        params={},
        session_id=None,
        tags=[],
        private=False,
    )
    job.status = RUNNING
    store._jobs[job.id] = job
    store._children[job.id] = child
    started = time.monotonic()
    store.shutdown()
    child.join(timeout=10)
    assert not child.is_alive() and time.monotonic() - started < 10
    assert job.status == CANCELLED
