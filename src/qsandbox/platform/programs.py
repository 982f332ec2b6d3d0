"""The three Runtime programs, run for real on a device's noisy Aer simulator.

Inputs are decoded the way the service decodes them (``RuntimeDecoder`` for ``sampler`` and
``estimator``; the ibm-quantum-schemas params model for ``executor``) and results are encoded
the way the client decodes them (``RuntimeEncoder`` / the executor result model), so the
client's own decoders see the same shapes as from a real device.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ibm_quantum_schemas.common import CompressedTensorModel  # type: ignore[import-untyped]
from ibm_quantum_schemas.executor.version_2_0 import (  # type: ignore[import-untyped]
    ChunkPart,
    ChunkSpan,
    ItemMetadataModel,
    MetadataModel,
    QuantumProgramResultItemModel,
    QuantumProgramResultModel,
)
from qiskit import QuantumCircuit  # type: ignore[import-untyped]
from qiskit.primitives import BackendEstimatorV2, PrimitiveResult, PubResult, SamplerPubResult  # type: ignore[import-untyped]
from qiskit.primitives.containers.estimator_pub import EstimatorPub  # type: ignore[import-untyped]
from qiskit.primitives.containers.observables_array import ObservablesArray  # type: ignore[import-untyped]
from qiskit.primitives.containers.sampler_pub import SamplerPub  # type: ignore[import-untyped]
from qiskit.quantum_info import PauliList, SparsePauliOp  # type: ignore[import-untyped]
from qiskit_aer import AerSimulator  # type: ignore[import-untyped]
from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder  # type: ignore[import-untyped]
from qiskit_ibm_runtime.execution_span import DoubleSliceSpan, ExecutionSpans  # type: ignore[import-untyped]
from qiskit_ibm_runtime.fake_provider.executor import run_quantum_program as rqp_module  # type: ignore[import-untyped]
from qiskit_ibm_runtime.options_models.simulator import SimulatorOptions  # type: ignore[import-untyped]
from qiskit_ibm_runtime.quantum_program.converters.converters_2_0 import passthrough_data_to_2_0  # type: ignore[import-untyped]
from qiskit_ibm_runtime.quantum_program.params_converters import (  # type: ignore[import-untyped]
    QUANTUM_PROGRAM_PARAMS_CONVERTERS,
)

from . import noise_learner_v3, simulation
from .backends import Device
from .errors import ProgramError

PROGRAMS = ("sampler", "estimator", "executor", "noise-learner")

NOISE_LEARNER_DEFAULTS: dict[str, Any] = {
    "max_execution_time": None,
    "max_layers_to_learn": 4,
    "shots_per_randomization": 128,
    "num_randomizations": 32,
    "layer_pair_depths": [0, 1, 2, 4, 16, 32],
    "twirling_strategy": "active-accum",
}
"""The service's defaults, reported back in the result's ``input_options``."""

DEFAULT_SHOTS = 4096
DEFAULT_PRECISION = 0.015625


run_quantum_program = rqp_module.run_quantum_program


class _SplitSamplerFactory:
    def __init__(self, device: Device) -> None:
        self._device = device

    def from_backend(self, _backend: Any, seed: int | None = None) -> simulation.SplitSampler:
        return simulation.SplitSampler(self._device.target, seed, self._device.name)


@dataclass
class Outcome:
    """What running a job gave: results JSON or a failure reason, and lines for the job's logs."""

    result: str | None
    reason: str | None
    logs: list[str] = field(default_factory=list)


def _enabled(value: Any) -> bool:
    return bool(value) and value not in ("none", "None")


_LEVELS: dict[Any, str] = {
    1: "measurement mitigation with twirled readout",
    2: "measurement mitigation and zero-noise extrapolation",
}


def not_simulated(program_id: str, options: dict[str, Any]) -> list[str]:
    """What the real service would do with these options that the emulator does not.

    The options are accepted and recorded in the result's metadata; these lines go to the
    job's logs so that a rehearsal says where it differs from a run on the device.
    """
    notes = []
    dd = options.get("dynamical_decoupling") or {}
    if _enabled(dd.get("enable")):
        seq = dd.get("sequence_type", "XX")
        notes.append(f"dynamical decoupling ({seq}) requested: not simulated, idle periods ran as submitted")
    twirling = options.get("twirling") or {}
    twirled = [k for k in ("enable_gates", "enable_measure") if _enabled(twirling.get(k))]
    if twirled:
        notes.append(f"Pauli twirling ({', '.join(twirled)}) requested: not simulated, circuits ran untwirled")
    if program_id == "estimator":
        level = options.get("resilience_level")
        resilience = options.get("resilience") or {}
        methods = [k for k in ("measure_mitigation", "zne_mitigation", "pec_mitigation") if _enabled(resilience.get(k))]
        if level is None and not methods:
            notes.append(
                "resilience level 1 (the service's default: measurement mitigation with twirled "
                "readout) not applied: expectation values are raw noisy estimates"
            )
        elif _enabled(level) or methods:
            detail = ", ".join(methods) or _LEVELS.get(level, "its methods")
            notes.append(
                f"resilience level {level if level is not None else 'custom'} ({detail}) not applied: "
                "expectation values are raw noisy estimates"
            )
    execution = options.get("execution") or {}
    if execution.get("init_qubits") is False or execution.get("rep_delay") is not None:
        notes.append("execution options (init_qubits, rep_delay) recorded: every shot starts from |0>")
    return notes


def _recorded(options: dict[str, Any], notes: list[str], device: Device, qubits: set[int]) -> dict[str, Any]:
    """Result metadata: the options as requested, and what the emulator did instead."""
    recorded: dict[str, Any] = {
        k: options[k] for k in ("dynamical_decoupling", "twirling", "resilience") if k in options
    }
    if "resilience_level" in options:
        recorded["resilience_level"] = options["resilience_level"]
    recorded["qsandbox"] = {
        "simulator": f"noisy Aer simulation of {device.name}",
        "simulated_qubits": sorted(qubits),
        "not_simulated": notes,
    }
    return recorded


def _fits(device: Device, qubits: set[int]) -> int:
    try:
        return simulation.check_fits(len(qubits), device.name)
    except simulation.TooLarge as ex:
        raise ProgramError(str(ex)) from ex


def _simulator(device: Device, qubits: set[int], seed: int | None) -> Any:
    memory_mb = _fits(device, qubits)
    sim = simulation.simulator(device.target, qubits or {0}, seed=seed)
    sim.set_options(max_memory_mb=memory_mb)
    return sim


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _seed(options: dict[str, Any]) -> int | None:
    return (options.get("simulator") or {}).get("seed_simulator")


def run_sampler(params: dict[str, Any], device: Device, logs: list[str]) -> str:
    options = params.get("options") or {}
    shots = options.get("default_shots") or DEFAULT_SHOTS
    try:
        pubs = [SamplerPub.coerce(tuple(p) if isinstance(p, list) else p, shots) for p in params["pubs"]]
    except (KeyError, TypeError, ValueError) as ex:
        raise ProgramError(f"Invalid sampler input: {ex}") from ex
    _check_width(pubs, device)
    qubits = set().union(*(simulation.touched_qubits(pub.circuit) for pub in pubs))
    notes = not_simulated("sampler", options)
    logs.extend(notes)
    start = _now()
    raw = simulation.SplitSampler(device.target, _seed(options), device.name).run(pubs).result()
    stop = _now()
    results = [
        SamplerPubResult(res.data, metadata={"circuit_metadata": pub.circuit.metadata})
        for pub, res in zip(pubs, raw, strict=True)
    ]
    # Shape must be pub.shape + (shots,): the client's span masks index the data with it.
    span = DoubleSliceSpan(
        start,
        stop,
        {
            i: ((*pub.shape, pub.shots), slice(0, math.prod(pub.shape)), slice(0, pub.shots))
            for i, pub in enumerate(pubs)
        },
    )
    metadata = {
        "execution": {"execution_spans": ExecutionSpans([span])},
        "version": 2,
        **_recorded(options, notes, device, qubits),
    }
    return json.dumps(PrimitiveResult(results, metadata=metadata), cls=RuntimeEncoder)


def _check_width(pubs: list[Any], device: Device) -> None:
    for pub in pubs:
        if pub.circuit.num_qubits > device.num_qubits:
            raise ProgramError(
                f"The circuit has {pub.circuit.num_qubits} qubits, more than the {device.num_qubits} of {device.name}."
            )


def _reduce_observables(
    observables: ObservablesArray, active: set[int], readout: dict[int, float]
) -> tuple[ObservablesArray, Any]:
    """``observables`` with every factor on an untouched qubit replaced by its value.

    Also returns a mask (``observables``' shape) of the observables that vanish altogether:
    they are simulated as the identity, and their results are set to 0 afterwards.
    """
    n = observables.num_qubits
    flat = observables.ravel()
    reduced = np.empty(flat.size, dtype=object)  # filled one by one: numpy would iterate into operators
    vanishing = np.zeros(flat.size, dtype=bool)
    for i in range(flat.size):
        terms = flat[i]
        if not isinstance(terms, dict) or any(set(label) - set("IXYZ") for label in terms):
            return observables, np.zeros(observables.shape, dtype=bool)  # projectors: simulate as given
        op = SparsePauliOp.from_list(list(terms.items()), num_qubits=n)
        op = simulation.reduce_observable(op, active, readout)
        if not np.any(op.coeffs):
            op, vanishing[i] = SparsePauliOp("I" * n), True
        reduced[i] = op
    shape = observables.shape
    return ObservablesArray.coerce(reduced.reshape(shape)), vanishing.reshape(shape)


def _explicit_precision(pub: Any) -> float | None:
    """The precision a pub carries itself (or from ``run(precision=)``), else ``None``."""
    if isinstance(pub, EstimatorPub):
        return pub.precision  # type: ignore[no-any-return]
    if isinstance(pub, tuple) and len(pub) >= 4:
        return pub[3]  # type: ignore[no-any-return]
    return None


def _auto(value: Any) -> bool:
    return value is None or value == "auto"


def estimator_shots(options: dict[str, Any], precision: float, explicit: bool) -> tuple[int, int | None]:
    """Shots for one estimator pub as the service chooses them, and its randomizations if twirled.

    A pub's own precision is obeyed (1/precision² shots); otherwise ``default_shots`` overrides
    ``default_precision``. With twirling on (by default: measurement twirling from resilience level
    1, gate twirling at level 2), ``num_randomizations * shots_per_randomization`` shots run, each
    "auto" one derived as ``TwirlingOptions`` documents, and that product takes precedence over
    ``default_shots``.
    """
    level = options.get("resilience_level", 1)
    shots = math.ceil(1 / precision**2)
    if not explicit and options.get("default_shots"):
        shots = int(options["default_shots"])
    twirling = options.get("twirling") or {}
    gates, measure = twirling.get("enable_gates"), twirling.get("enable_measure")
    gates = level is not None and level >= 2 if gates is None else bool(gates)
    measure = level is not None and level >= 1 if measure is None else bool(measure)
    if not (gates or measure):
        return shots, None
    randomizations: Any = twirling.get("num_randomizations")
    per: Any = twirling.get("shots_per_randomization")
    if _auto(per):
        pec = bool((options.get("resilience") or {}).get("pec_mitigation"))
        if not _auto(randomizations):
            per = math.ceil(shots / int(randomizations))
        else:
            per = 64 if pec else max(64, math.ceil(shots / 32))
    if _auto(randomizations):
        randomizations = math.ceil(shots / int(per))
    return int(randomizations) * int(per), int(randomizations)


def precision_for(shots: int) -> float:
    """The precision for which ``BackendEstimatorV2`` runs exactly ``shots`` (it takes ceil(1/p²))."""
    precision = 1 / math.sqrt(shots)
    while math.ceil(1 / precision**2) > shots:
        precision = math.nextafter(precision, 1.0)
    while math.ceil(1 / precision**2) < shots:
        precision = math.nextafter(precision, 0.0)
    return precision


def run_estimator(params: dict[str, Any], device: Device, logs: list[str]) -> str:
    options = dict(params.get("options") or {})
    if params.get("resilience_level") is not None:  # the client sends it beside the options
        options["resilience_level"] = params["resilience_level"]
    precision = options.get("default_precision") or DEFAULT_PRECISION
    try:
        raw_pubs = [tuple(p) if isinstance(p, list) else p for p in params["pubs"]]
        explicit = [_explicit_precision(p) is not None for p in raw_pubs]
        pubs = [EstimatorPub.coerce(p, precision) for p in raw_pubs]
    except (KeyError, TypeError, ValueError) as ex:
        raise ProgramError(f"Invalid estimator input: {ex}") from ex
    _check_width(pubs, device)
    shots = [estimator_shots(options, pub.precision, given) for pub, given in zip(pubs, explicit, strict=True)]
    readout = simulation.readout_errors(device.target)
    reduced_pubs: list[Any] = []
    qubits: set[int] = set()
    masks: list[Any] = []
    untouched = 0
    for pub in pubs:
        active = simulation.touched_qubits(pub.circuit)
        qubits |= active
        observables, vanishing = _reduce_observables(pub.observables, active, readout)
        masks.append(vanishing)
        untouched = max(untouched, pub.circuit.num_qubits - len(active))
        exact = precision_for(shots[len(reduced_pubs)][0])
        reduced_pubs.append(EstimatorPub(pub.circuit, observables, pub.parameter_values, exact))
    notes = not_simulated("estimator", options)
    logs.extend(notes)
    if untouched:
        logs.append(
            f"qubits the circuit leaves idle (up to {untouched}) were not simulated: they are in |0>, so "
            "their observable factors were applied exactly (Z through the device's readout error)"
        )
    seed = options.get("seed_estimator", _seed(options))
    estimator = BackendEstimatorV2(
        backend=_simulator(device, qubits, seed),
        options={"default_precision": precision, "seed_simulator": seed},
    )
    raw = estimator.run(reduced_pubs).result()
    results = []
    for res, vanishing, (total, randomizations) in zip(raw, masks, shots, strict=True):
        data = res.data
        # 0-d results as 0-d arrays, never numpy scalars: the client reads .shape of each field.
        evs, stds = np.array(data.evs, dtype=float), np.array(data.stds, dtype=float)
        zero = np.broadcast_to(vanishing, evs.shape)
        evs[zero], stds[zero] = 0.0, 0.0
        fields = {"evs": evs, "stds": stds, "ensemble_standard_error": stds.copy()}
        pub_metadata = {**res.metadata, "shots": total}
        if randomizations is not None:
            pub_metadata["num_randomizations"] = randomizations
        results.append(PubResult(type(data)(**fields, shape=evs.shape), metadata=pub_metadata))
    metadata = {"version": 2, **_recorded(options, notes, device, qubits)}
    return json.dumps(PrimitiveResult(results, metadata=metadata), cls=RuntimeEncoder)


def run_executor(params: dict[str, Any], device: Device, logs: list[str]) -> str:
    version = params.get("schema_version")
    converter = QUANTUM_PROGRAM_PARAMS_CONVERTERS.get(version)
    if converter is None:
        raise ProgramError(f"Unsupported executor schema version {version!r}.")
    try:
        program, _ = converter.decoder(converter.model.model_validate(params))
        for item in program.items:
            samplex = getattr(item, "samplex", None)
            if samplex is not None and not getattr(samplex, "_finalized", True):
                samplex.finalize()  # decoded samplexes are not finalized; the service finalizes them
    except ValueError as ex:
        raise ProgramError(f"Invalid executor input: {ex}") from ex
    for item in program.items:
        if item.circuit.num_qubits > device.num_qubits:
            raise ProgramError(
                f"The circuit has {item.circuit.num_qubits} qubits, more than the {device.num_qubits} of {device.name}."
            )
    seed = (params.get("options") or {}).get("simulator", {}).get("seed_simulator")
    start = _now()
    # run_quantum_program makes its sampler with `AerSamplerV2.from_backend(backend, seed=)`: in this
    # forked child only, that name is pointed at the splitting sampler of this device.
    rqp_module.AerSamplerV2 = _SplitSamplerFactory(device)
    result = run_quantum_program(AerSimulator(), program, SimulatorOptions(seed_simulator=seed))
    stop = _now()
    parts = []
    for idx, item in enumerate(program.items):
        size = math.prod(item.shape)
        parts.append(
            ChunkPart(idx_item=idx, size=size, permutation=list(range(len(item.shape))), element_range=(0, size, 1))
        )
    model = QuantumProgramResultModel(
        data=[
            QuantumProgramResultItemModel(
                results={k: CompressedTensorModel.from_numpy(np.asarray(v)) for k, v in item.items()},
                metadata=ItemMetadataModel(),
            )
            for item in result
        ],
        metadata=MetadataModel(chunk_timing=[ChunkSpan(start=start, stop=stop, parts=parts)]),
        passthrough_data=passthrough_data_to_2_0(program.passthrough_data),
        semantic_role=program._semantic_role,
    )
    return str(model.model_dump_json())


def _layers(circuit: Any) -> list[tuple[tuple[tuple[str, tuple[int, ...]], ...], tuple[int, ...]]]:
    """The circuit's layers of two-qubit gates (greedy, in order), each with the circuit's qubits."""
    qubits = tuple(sorted(simulation.touched_qubits(circuit)))
    layers: list[list[tuple[str, tuple[int, ...]]]] = []
    busy: list[set[int]] = []
    depth: dict[int, int] = {}
    for instruction in circuit.data:
        indices = tuple(circuit.find_bit(q).index for q in instruction.qubits)
        if instruction.operation.name in ("barrier", "delay") or len(indices) < 2:
            continue
        level = max(depth.get(q, 0) for q in indices)
        while level < len(busy) and busy[level] & set(indices):
            level += 1
        if level == len(layers):
            layers.append([])
            busy.append(set())
        layers[level].append((instruction.operation.name, indices))
        busy[level] |= set(indices)
        for q in indices:
            depth[q] = level + 1
    return [(tuple(sorted(layer)), qubits) for layer in layers]


def _pauli(n: int, ops: dict[int, str]) -> str:
    """Label of the ``n``-qubit Pauli with ``ops`` (qubit -> letter) and identity elsewhere."""
    return "".join(ops.get(n - 1 - i, "I") for i in range(n))


def run_noise_learner(params: dict[str, Any], device: Device, logs: list[str]) -> str:
    """Layer errors as the device's calibration gives them; nothing is learned by experiment.

    (The V3 form, with a ``schema_version``, is answered by ``noise_learner_v3``.)

    Each unique layer of two-qubit gates (with the qubits of its circuit) gets a sparse
    Pauli-Lindblad model: the weight-1 Paulis of every qubit and the weight-2 Paulis of every
    gate pair, with the device's gate errors spread over them as a depolarizing channel would be.
    """
    if noise_learner_v3.is_v3(params):
        return noise_learner_v3.run(params, device, logs)
    options = dict(params.get("options") or {})
    options.pop("support_qiskit", None)
    input_options = {**NOISE_LEARNER_DEFAULTS, **{k: v for k, v in options.items() if k != "experimental"}}
    limit = input_options.get("max_layers_to_learn")
    circuits = params.get("circuits") or []
    if not isinstance(circuits, list) or not all(isinstance(c, QuantumCircuit) for c in circuits):
        raise ProgramError("Invalid noise-learner input: circuits must be a list of circuits.")
    target = device.target
    unique: list[tuple[tuple[tuple[str, tuple[int, ...]], ...], tuple[int, ...]]] = []
    for circuit in circuits:
        for layer in _layers(circuit):
            if layer not in unique:
                unique.append(layer)
    if limit is not None:
        unique = unique[: max(int(limit), 0)]
    data = []
    for gates, qubits in unique:
        local = {q: i for i, q in enumerate(qubits)}
        n = len(qubits)
        layer_circuit = QuantumCircuit(n)
        generators: list[str] = []
        rates: list[float] = []
        single: dict[int, float] = {}  # weight-1 rate per qubit

        for name, pair in gates:
            layer_circuit.append(target.operation_from_name(name), [local[q] for q in pair])
            error = noise_learner_v3.calibrated_error(device, name, pair, noise_learner_v3.DEFAULT_TWO_QUBIT_ERROR)
            for q in pair:
                single[q] = error / 15  # 6 of a two-qubit depolarizing channel's 15 Paulis
            for a in "XYZ":
                for b in "XYZ":
                    generators.append(_pauli(n, {local[pair[0]]: a, local[pair[1]]: b}))
                    rates.append(error / 15)
        for q in qubits:
            if q not in single:  # idle in this layer: a single-qubit gate's worth of error
                single[q] = noise_learner_v3.calibrated_error(device, "sx", (q,), 0.0) / 3
            for a in "XYZ":
                generators.append(_pauli(n, {local[q]: a}))
                rates.append(single[q])
        error_model = {"generators": PauliList(generators), "rates": np.array(rates)}
        data.append([{"circuit": layer_circuit, "qubits": list(qubits)}, error_model])
    logs.append(
        "noise learning not run: each layer's Pauli-Lindblad rates come from the device's calibrated "
        "gate errors, spread as a depolarizing channel would spread them"
    )
    return json.dumps(
        {"data": data, "metadata": {"backend": device.name, "input_options": input_options}}, cls=RuntimeEncoder
    )


def run_program(program_id: str, body: str, device: Device) -> Outcome:
    """Run one job (``body`` is the raw ``POST /jobs`` JSON): its results JSON and log lines.

    The caller holds ``device.lock``.
    """
    payload = json.loads(body, cls=RuntimeDecoder if program_id != "executor" else None)
    params = payload.get("params") or {}
    runner = {
        "sampler": run_sampler,
        "estimator": run_estimator,
        "executor": run_executor,
        "noise-learner": run_noise_learner,
    }
    logs: list[str] = []
    return Outcome(runner[program_id](params, device, logs), None, logs)
