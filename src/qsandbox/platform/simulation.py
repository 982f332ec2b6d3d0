"""Simulating only what a circuit touches, so that 127- and 156-qubit devices stay fast.

A circuit transpiled for a large device names every physical qubit, but touches a few. The noisy
simulator of a job is built for those qubits only: its noise model holds the device's errors
(gate, readout, thermal relaxation) on the touched qubits, at their physical indices, and Aer's
truncation leaves the untouched ones out of the state. Building it takes milliseconds, where the
whole device's noise model takes seconds (and a run with it as long again).

Observables may reach beyond the circuit (``X`` on every qubit of a 27-qubit device measured
after a 3-qubit circuit). An untouched qubit is in ``|0>``: its ``I`` and ``Z`` factors are 1
(``Z`` read through the device's readout error, 1 - 2p), ``X`` and ``Y`` are 0, so the term is
scaled or dropped analytically rather than by simulating the qubit.

Sampling goes further (``SplitSampler``): qubits that no multi-qubit instruction joins are
independent, noise included, so a circuit measuring every qubit of a device is sampled in parts
that each fit. A part (or an estimator circuit) that touches more qubits than the memory left can
hold as a state vector fails as a job error that says so, before Aer is asked to allocate it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from qiskit import QuantumCircuit  # type: ignore[import-untyped]
from qiskit.primitives import PrimitiveResult, SamplerPubResult  # type: ignore[import-untyped]
from qiskit.primitives.containers import DataBin  # type: ignore[import-untyped]
from qiskit.primitives.containers.sampler_pub import SamplerPub  # type: ignore[import-untyped]
from qiskit.providers import BackendV2, Options  # type: ignore[import-untyped]
from qiskit.quantum_info import SparsePauliOp  # type: ignore[import-untyped]
from qiskit.transpiler import Target  # type: ignore[import-untyped]
from qiskit_aer import AerSimulator  # type: ignore[import-untyped]
from qiskit_aer.noise import NoiseModel  # type: ignore[import-untyped]
from qiskit_aer.primitives import SamplerV2 as AerSampler  # type: ignore[import-untyped]

_NOT_TOUCHING = frozenset({"barrier"})
STATE_BYTES_PER_AMPLITUDE = 16  # complex128
MEMORY_SHARE = 0.5
"""Share of the available memory one simulation's state vector may take (Aer needs headroom)."""


class TooLarge(Exception):
    """The circuit cannot be simulated here; the message says why, for the job's reason."""


class _SubBackend(BackendV2):  # type: ignore[misc]
    """Just enough of a backend for ``NoiseModel.from_backend``: a target and its ``dt``."""

    def __init__(self, target: Target, name: str) -> None:
        super().__init__(name=name)
        self._sub_target = target

    @property
    def target(self) -> Target:
        return self._sub_target

    @property
    def max_circuits(self) -> None:
        return None

    @classmethod
    def _default_options(cls) -> Options:
        return Options()

    def run(self, run_input: Any, **options: Any) -> Any:
        raise NotImplementedError("only used to build a noise model")


def touched_qubits(circuit: QuantumCircuit) -> set[int]:
    """Indices of the qubits any instruction but a barrier acts on (control flow included)."""
    touched: set[int] = set()
    for instruction in circuit.data:
        if instruction.operation.name not in _NOT_TOUCHING:
            touched.update(circuit.find_bit(q).index for q in instruction.qubits)
    return touched


def restricted_target(target: Target, qubits: Iterable[int]) -> Target:
    """``target`` with only the instructions whose qubits are all in ``qubits`` (same indices)."""
    keep = set(qubits)
    sub = Target(
        num_qubits=target.num_qubits,
        dt=target.dt,
        qubit_properties=target.qubit_properties,
        description=target.description,
    )
    for name in target.operation_names:
        props = target[name]
        kept: dict[tuple[int, ...], Any] | None = {}
        for qargs, prop in props.items():
            if qargs is None:  # a global instruction (control flow): no per-qubit errors
                kept = None
                break
            if keep.issuperset(qargs):
                assert kept is not None
                kept[qargs] = prop
        sub.add_instruction(target.operation_from_name(name), kept, name=name)
    return sub


def memory_available() -> int:
    """Bytes this process may still allocate: the cgroup's limit if any, else the machine's."""
    candidates = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            with open(limit_path, encoding="ascii") as fh:
                limit = fh.read().strip()
            with open(usage_path, encoding="ascii") as fh:
                usage = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            candidates.append(max(int(limit) - usage, 0))
        break
    override = os.environ.get("QSANDBOX_PLATFORM_SIM_MEMORY")  # for tests: pretend to have less
    if override:
        candidates.append(int(override))
    return min(candidates) if candidates else 1 << 30


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def check_fits(qubits: int, backend_name: str) -> int:
    """Raise ``TooLarge`` unless a state of ``qubits`` qubits fits; return Aer's memory cap (MiB)."""
    available = memory_available()
    needed = STATE_BYTES_PER_AMPLITUDE * 2.0**qubits
    if needed > available * MEMORY_SHARE:
        raise TooLarge(
            f"The circuit acts on {qubits} qubits of {backend_name}: a noisy simulation of them needs "
            f"{_size(needed)} for its state vector, and the emulated platform has {_size(available)} "
            "available. The real device runs it; the emulator cannot. Use fewer active qubits (idle "
            "qubits of the device cost nothing)."
        )
    return max(int(available * 0.9) >> 20, 1)


def noise_model(target: Target, qubits: Iterable[int]) -> NoiseModel:
    """The device's noise (gate, readout, relaxation errors) on ``qubits`` only."""
    return NoiseModel.from_backend(_SubBackend(restricted_target(target, qubits), "restricted"))


DENSITY_MATRIX_QUBITS = range(7, 10)
"""Active-qubit counts for which a density matrix beats Aer's automatic choice on a noisy circuit.

Measured on this machine (a twirled 128-binding x 128-shot samplex circuit, FakeFez noise):
8 qubits 3.72 s automatic against 1.09 s density matrix, 9 qubits 6.43 s against 2.97 s; at 6
qubits and below they are equal (Aer already picks it), at 10 the density matrix is slower."""

_DENSITY_MATRIX_OPS: frozenset[str] | None = None


def method_for(circuit: QuantumCircuit, active: int) -> str:
    """``density_matrix`` for a circuit of ``active`` qubits in that range that it can run, else Aer's choice."""
    global _DENSITY_MATRIX_OPS
    if active not in DENSITY_MATRIX_QUBITS:
        return "automatic"
    if _DENSITY_MATRIX_OPS is None:
        basis = AerSimulator(method="density_matrix").configuration().basis_gates
        _DENSITY_MATRIX_OPS = frozenset(basis) | {"measure", "barrier"}
    return "density_matrix" if _DENSITY_MATRIX_OPS.issuperset(circuit.count_ops()) else "automatic"


def simulator(target: Target, qubits: Iterable[int], seed: int | None = None) -> AerSimulator:
    """Noisy Aer simulator with the device's errors on ``qubits`` only (physical indices)."""
    sim = AerSimulator(noise_model=noise_model(target, qubits), seed_simulator=seed)
    sim.set_max_qubits(max(target.num_qubits, 1))
    return sim


def idle_factor(pauli: str, readout_error: float) -> float:
    """Expectation of one Pauli on a qubit left in ``|0>``, as the device would read it."""
    return {"I": 1.0, "Z": 1.0 - 2.0 * readout_error, "X": 0.0, "Y": 0.0}[pauli]


def reduce_observable(observable: SparsePauliOp, active: set[int], readout: dict[int, float]) -> SparsePauliOp:
    """The same expectation with every untouched qubit's Pauli factor replaced by its value.

    ``readout`` maps a qubit to its readout error. The result acts as identity outside
    ``active``; a term that vanishes (``X``/``Y`` on an untouched qubit) is dropped.
    """
    n = observable.num_qubits
    labels: list[str] = []
    coeffs: list[complex] = []
    for label, coeff in observable.to_list():
        factor = 1.0
        chars = list(label)  # little-endian: qubit q is chars[n - 1 - q]
        for q in range(n):
            pauli = chars[n - 1 - q]
            if q not in active and pauli != "I":
                factor *= idle_factor(pauli, readout.get(q, 0.0))
                chars[n - 1 - q] = "I"
        if factor != 0.0:
            labels.append("".join(chars))
            coeffs.append(complex(coeff) * factor)
    if not labels:
        return SparsePauliOp("I" * n, coeffs=np.array([0.0]))
    return SparsePauliOp(labels, coeffs=np.array(coeffs)).simplify(atol=0)


def readout_errors(target: Target) -> dict[int, float]:
    """Per-qubit readout error of the device (the target's ``measure`` error)."""
    if "measure" not in target.operation_names:
        return {}
    errors: dict[int, float] = {}
    for qargs, prop in target["measure"].items():
        if qargs and prop is not None and prop.error is not None:
            errors[qargs[0]] = float(prop.error)
    return errors


def components(circuit: QuantumCircuit) -> list[set[int]] | None:
    """Touched qubits grouped by the multi-qubit instructions that join them.

    ``None`` when the circuit cannot be split: classical feed-forward (control flow, conditions),
    a classical bit written more than once, or instructions with classical inputs.
    """
    parent: dict[int, int] = {}

    def find(q: int) -> int:
        while parent.setdefault(q, q) != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    written: set[int] = set()
    for instruction in circuit.data:
        operation = instruction.operation
        if operation.name in _NOT_TOUCHING:
            continue
        if getattr(operation, "blocks", None) or getattr(operation, "condition", None) is not None:
            return None
        for clbit in instruction.clbits:
            index = circuit.find_bit(clbit).index
            if index in written or operation.name != "measure":
                return None
            written.add(index)
        qubits = [circuit.find_bit(q).index for q in instruction.qubits]
        root = find(qubits[0])
        for q in qubits[1:]:
            parent[find(q)] = root
    groups: dict[int, set[int]] = {}
    for q in list(parent):
        groups.setdefault(find(q), set()).add(q)
    return sorted(groups.values(), key=min)


def batches(groups: list[set[int]], size: int) -> list[set[int]]:
    """Pack components into batches of at most ``size`` qubits (a larger component stays whole)."""
    packed: list[set[int]] = []
    for group in sorted(groups, key=len, reverse=True):
        for batch in packed:
            if len(batch) + len(group) <= size:
                batch |= group
                break
        else:
            packed.append(set(group))
    return packed


def part_of(circuit: QuantumCircuit, qubits: set[int]) -> QuantumCircuit:
    """The instructions of ``circuit`` on ``qubits`` only; same width, bits and parameters.

    Parameters that only the left-out instructions use are kept in the global phase, which no
    measurement sees, so the same parameter bindings apply to every part.
    """
    part = circuit.copy_empty_like()
    for instruction in circuit.data:
        if instruction.operation.name in _NOT_TOUCHING:
            continue
        if qubits.issuperset(circuit.find_bit(q).index for q in instruction.qubits):
            part._append(instruction)
    missing = [p for p in circuit.parameters if p not in part.parameters]
    if missing:
        part.global_phase = part.global_phase + sum(missing[1:], missing[0])
    return part


SPLIT_ABOVE = 4
"""Circuits touching more qubits than this run as independent parts when they can be split.

Parts are packed up to ``PART_QUBITS`` qubits (or the widest part). Measured on a twirled samplex
of 128 bindings x 128 shots with FakeFez noise: a 4-qubit run takes 0.14-0.18 s, an 8-qubit one
1.1 s (density matrix) to 3.7 s (Aer's choice), so eight independent qubits run as two parts."""

PART_QUBITS = 4


class _Done:
    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


class SplitSampler:
    """Aer's SamplerV2 on a device's noise, simulating only touched qubits, in independent parts.

    Qubits that no multi-qubit instruction joins evolve independently, noise included (every
    error of the device model is local to a gate's qubits or a measurement). A wide circuit of
    such parts (a samplex measuring every qubit of a 156-qubit device, ``measure_all`` after a
    2-qubit circuit) is sampled part by part, each on its own simulator and seed, and the bits
    are put together: the joint distribution is exactly the product of the parts'.
    """

    def __init__(self, target: Target, seed: int | None, backend_name: str) -> None:
        self._target = target
        self._seed = seed
        self._name = backend_name
        self._runs = 0
        self._noise: dict[frozenset[int], NoiseModel] = {}

    def _sample(self, circuit: QuantumCircuit, pub: Any, qubits: set[int]) -> Any:
        memory_mb = check_fits(len(qubits), self._name)
        seed = None if self._seed is None else self._seed + self._runs
        self._runs += 1
        key = frozenset(qubits or {0})
        noise = self._noise.get(key)
        if noise is None:
            noise = self._noise[key] = noise_model(self._target, key)
        method = method_for(circuit, len(qubits))
        sim = AerSimulator(noise_model=noise, seed_simulator=seed, max_memory_mb=memory_mb, method=method)
        sim.set_max_qubits(max(self._target.num_qubits, 1))
        sampler = AerSampler.from_backend(sim, seed=seed)
        return sampler.run([SamplerPub(circuit, pub.parameter_values, pub.shots)]).result()[0]

    def run_pub(self, pub: Any) -> Any:
        circuit = pub.circuit
        touched = touched_qubits(circuit)
        groups = components(circuit) if len(touched) > SPLIT_ABOVE else None
        if groups is None or len(groups) == 1:
            return self._sample(circuit, pub, touched)
        widest = max(len(g) for g in groups)
        check_fits(widest, self._name)
        packed = batches(groups, max(widest, PART_QUBITS))
        parts = [self._sample(part_of(circuit, batch), pub, batch) for batch in packed]
        data = {}
        for name in parts[0].data:
            combined = parts[0].data[name]
            for part in parts[1:]:
                combined = combined | part.data[name]  # each classical bit is written by one part
            data[name] = combined
        return SamplerPubResult(DataBin(**data, shape=pub.shape), metadata=parts[0].metadata)

    def run(self, pubs: Iterable[Any], *, shots: int | None = None) -> _Done:
        coerced = [SamplerPub.coerce(pub, shots) for pub in pubs]
        return _Done(PrimitiveResult([self.run_pub(pub) for pub in coerced], metadata={"version": 2}))
