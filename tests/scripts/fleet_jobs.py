"""IBM's fleet names on the emulated platform: a Bell pair on ibm_fez, an estimator on ibm_torino."""

import json
import time

from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import EstimatorV2, QiskitRuntimeService, SamplerV2

service = QiskitRuntimeService()
started = time.monotonic()
print("least busy:", service.least_busy(operational=True, simulator=False, min_num_qubits=127).name)
print("least busy seconds:", round(time.monotonic() - started, 2))

fez = service.backend("ibm_fez")
print("fez:", fez.num_qubits, " ".join(sorted(fez.basis_gates)))
bell = QuantumCircuit(2)
bell.h(0)
bell.cx(0, 1)
measured = bell.measure_all(inplace=False)
started = time.monotonic()
job = SamplerV2(mode=fez).run(
    [generate_preset_pass_manager(optimization_level=1, backend=fez).run(measured)], shots=1000
)
print("counts:", json.dumps(job.result()[0].data.meas.get_counts(), sort_keys=True))
print("fez seconds:", round(time.monotonic() - started, 2))

torino = service.backend("ibm_torino")
isa = generate_preset_pass_manager(optimization_level=1, backend=torino).run(bell)
started = time.monotonic()
result = EstimatorV2(mode=torino).run([(isa, SparsePauliOp("ZZ").apply_layout(isa.layout))]).result()
print("torino zz:", float(result[0].data.evs))
print("torino seconds:", round(time.monotonic() - started, 2))
