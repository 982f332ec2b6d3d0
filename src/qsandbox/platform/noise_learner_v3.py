"""The ``noise-learner`` program in its V3 form (``NoiseLearnerV3``): boxed instructions in, one
noise model per instruction out, in the ibm-quantum-schemas result model of the version sent.

As for the V2 form, nothing is learned by experiment: rates come from the device's calibration.
Which protocol answers an instruction is decided as the client decides it
(``find_learning_protocol``): a layer of Clifford two-qubit gates gets a sparse Pauli-Lindblad
model (weight-1 Paulis on every qubit of the box, weight-2 Paulis on every gate's pair), a layer
of measurements gets a TREX model (one X bit-flip per qubit, from the readout error). An
instruction no protocol can learn fails the job, as on the service.
"""

from __future__ import annotations

import math
from typing import Any

from qiskit.quantum_info import QubitSparsePauliList  # type: ignore[import-untyped]
from qiskit_ibm_runtime.noise_learner_v3.converters import (  # type: ignore[import-untyped]
    noise_learner_v3_result_to_0_1,
    noise_learner_v3_result_to_0_2,
    noise_learner_v3_result_to_0_3,
)
from qiskit_ibm_runtime.noise_learner_v3.find_learning_protocol import (  # type: ignore[import-untyped]
    find_learning_protocol,
)
from qiskit_ibm_runtime.noise_learner_v3.learning_protocol import LearningProtocol  # type: ignore[import-untyped]
from qiskit_ibm_runtime.noise_learner_v3.params_converters import (  # type: ignore[import-untyped]
    NOISE_LEARNER_V3_PARAMS_CONVERTERS,
)
from qiskit_ibm_runtime.results.noise_learner_v3 import (  # type: ignore[import-untyped]
    NoiseLearnerV3Result,
    NoiseLearnerV3Results,
)
from samplomatic.utils import undress_box  # type: ignore[import-untyped]

from . import simulation
from .backends import Device
from .errors import ProgramError

RESULT_ENCODERS = {
    "v0.1": noise_learner_v3_result_to_0_1,
    "v0.2": noise_learner_v3_result_to_0_2,
    "v0.3": noise_learner_v3_result_to_0_3,
}

DEFAULT_TWO_QUBIT_ERROR = 0.01
"""For a gate the device's calibration gives no error for."""


def is_v3(params: dict[str, Any]) -> bool:
    """The V3 client sends a ``schema_version`` (and ``version: 3``); the V2 client sends neither."""
    return "schema_version" in params


def _rate(probability: float) -> float:
    """The Pauli-Lindblad rate whose channel flips with ``probability``: p = (1 - e^(-2r)) / 2."""
    p = min(max(probability, 0.0), 0.499999)
    return -0.5 * math.log(1.0 - 2.0 * p)


def calibrated_error(device: Device, name: str, qubits: tuple[int, ...], default: float) -> float:
    """The device's calibrated error of gate ``name`` on ``qubits``, else ``default``."""
    target = device.target
    props = target[name].get(qubits) if name in target.operation_names else None
    return float(props.error) if props is not None and props.error is not None else default


def _physical(circuit: Any, qubit: Any) -> int:
    """The device qubit a decoded instruction acts on (its index in the transpiled ``q`` register)."""
    location = circuit.find_bit(qubit)
    for _register, index in location.registers:
        return int(index)
    return int(location.index)


def run(params: dict[str, Any], device: Device, logs: list[str]) -> str:  # noqa: C901 - one parameter check per field of the program's schema
    version = params.get("schema_version")
    converter = NOISE_LEARNER_V3_PARAMS_CONVERTERS.get(version)
    encoder = RESULT_ENCODERS.get(str(version))
    if converter is None or encoder is None:
        raise ProgramError(f"Unsupported noise-learner schema version {version!r}.")
    try:
        model = converter.model.model_validate({k: v for k, v in params.items() if k != "version"})
        circuit = model.instructions.to_quantum_circuit()
    except ValueError as ex:
        raise ProgramError(f"Invalid noise-learner input: {ex}") from ex
    depths = list(model.options.layer_pair_depths)
    readout = simulation.readout_errors(device.target)
    data = []
    for position, instruction in enumerate(circuit.data):
        if instruction.operation.name != "box":
            raise ProgramError(f"Invalid noise-learner input: instruction {position} is not a box.")
        protocol = find_learning_protocol(instruction)
        physical = [_physical(circuit, q) for q in instruction.qubits]
        if len(set(physical)) != len(physical) or max(physical, default=0) >= device.num_qubits:
            raise ProgramError(f"Instruction {position} acts on qubits {physical} outside {device.name}.")
        local = {q: i for i, q in enumerate(sorted(physical))}  # terms indexed in physical order
        n = len(physical)
        if protocol == LearningProtocol.TREX:
            generators = [[("X", [local[q]])] for q in sorted(physical)]
            rates = [_rate(readout.get(q, 0.0)) for q in sorted(physical)]
            metadata: dict[str, Any] = {
                "learning_protocol": "trex",
                "post_selection": {"fraction_kept": 1.0, "success_rates": {local[q]: 1.0 for q in physical}},
            }
        elif protocol == LearningProtocol.PAULI_LINDBLAD:
            body = undress_box(instruction.operation).body
            pairs = []
            for op in body.data:
                if op.operation.num_qubits == 2 and op.operation.name not in ("barrier", "delay"):
                    pair = tuple(physical[body.find_bit(q).index] for q in op.qubits)
                    pairs.append((op.operation.name, pair))
            weight1: dict[int, float] = {}
            generators, rates = [], []
            for name, pair in pairs:
                share = calibrated_error(device, name, pair, DEFAULT_TWO_QUBIT_ERROR) / 15  # 15 two-qubit Paulis
                for q in pair:
                    weight1[q] = weight1.get(q, 0.0) + share
                for a in "XYZ":
                    for b in "XYZ":
                        generators.append([(a + b, [local[pair[0]], local[pair[1]]])])
                        rates.append(_rate(share))
            for q in sorted(physical):
                if q not in weight1:  # idle in this layer: a single-qubit gate's worth of error
                    weight1[q] = calibrated_error(device, "sx", (q,), 0.0) / 3
                for a in "XYZ":
                    generators.append([(a, [local[q]])])
                    rates.append(_rate(weight1[q]))
            metadata = {
                "learning_protocol": "lindblad",
                "post_selection": {
                    "fraction_kept": {d: 1.0 for d in depths},
                    "success_rates": {d: {local[q]: 1.0 for q in physical} for d in depths},
                },
            }
        else:
            raise ProgramError(
                f"Instruction {position} cannot be learned: it is neither a layer of Clifford two-qubit "
                "gates nor a layer of measurements."
            )
        data.append(
            NoiseLearnerV3Result.from_generators(
                generators=[QubitSparsePauliList.from_sparse_list(g, n) for g in generators],
                rates=rates,
                rates_std=[0.0] * len(rates),
                metadata=metadata,
            )
        )
    logs.append(
        "noise learning not run: each instruction's rates come from the device's calibrated gate and "
        "readout errors (Pauli-Lindblad for gate layers, TREX for measurement layers)"
    )
    return str(encoder(NoiseLearnerV3Results(data=data)).model_dump_json())
