"""Expectation values of ZZ, XX and ZI on a Bell pair with EstimatorV2."""

import json

from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import EstimatorV2, QiskitRuntimeService

service = QiskitRuntimeService()
backend = service.least_busy(operational=True, simulator=False)

circuit = QuantumCircuit(2)
circuit.h(0)
circuit.cx(0, 1)
isa_circuit = generate_preset_pass_manager(optimization_level=1, backend=backend).run(circuit)
observables = [SparsePauliOp(label).apply_layout(isa_circuit.layout) for label in ("ZZ", "XX", "ZI")]

job = EstimatorV2(mode=backend).run([(isa_circuit, observables)])
result = job.result()[0]
print("backend:", backend.name, "job:", job.job_id())
print("evs:", json.dumps([round(float(v), 4) for v in result.data.evs]))
print("stds:", json.dumps([round(float(v), 4) for v in result.data.stds]))
