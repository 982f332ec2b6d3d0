"""How the emulator simulates: which Aer method, and how wide circuits are cut into parts."""

from __future__ import annotations

from typing import Any

import pytest
from qiskit import QuantumCircuit
from qiskit_ibm_runtime.fake_provider import FakeFez

from qsandbox.platform import simulation


def _chain(n: int, width: int = 156) -> QuantumCircuit:
    circuit = QuantumCircuit(width, n)
    circuit.sx(0)
    for q in range(n - 1):
        circuit.cz(q, q + 1)
    circuit.measure(range(n), range(n))
    return circuit


@pytest.mark.parametrize(
    ("active", "method"),
    [(2, "automatic"), (6, "automatic"), (8, "density_matrix"), (9, "density_matrix"), (10, "automatic")],
)
def test_density_matrix_only_where_it_was_measured_faster(active, method):  # type: ignore[no-untyped-def]
    assert simulation.method_for(_chain(active), active) == method


def test_density_matrix_not_chosen_for_an_instruction_it_cannot_run():  # type: ignore[no-untyped-def]
    circuit = _chain(8)
    circuit.initialize([0, 1], 9)
    assert simulation.method_for(circuit, 8) == "automatic"


@pytest.fixture
def widths(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of qubits of each part the sampler runs, in order."""
    seen: list[int] = []
    original = simulation.SplitSampler._sample

    def record(self: Any, part: QuantumCircuit, pub: Any, qubits: set[int]) -> Any:
        seen.append(len(qubits))
        return original(self, part, pub, qubits)

    monkeypatch.setattr(simulation.SplitSampler, "_sample", record)
    return seen


def test_independent_qubits_run_as_parts_of_at_most_four_and_bits_come_back_in_place(widths):  # type: ignore[no-untyped-def]
    circuit = QuantumCircuit(156, 8)
    for q in range(8):
        if q % 2:
            circuit.x(q)
        circuit.measure(q, q)
    sampler = simulation.SplitSampler(FakeFez().target, 5, "ibm_fez")
    counts = sampler.run([(circuit,)], shots=200).result()[0].data.c.get_counts()
    assert sorted(widths) == [4, 4]
    assert max(counts, key=counts.get) == "10101010"  # bit q is qubit q: odd qubits flipped
    assert counts["10101010"] > 150, counts


def test_a_connected_circuit_is_not_cut(widths):  # type: ignore[no-untyped-def]
    sampler = simulation.SplitSampler(FakeFez().target, 5, "ibm_fez")
    sampler.run([(_chain(6),)], shots=50).result()
    assert widths == [6]
