"""Submit a job big enough to stay queued or running for a while, then cancel it."""

import time

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2

service = QiskitRuntimeService()
backend = service.backend(sorted(service.backends(), key=lambda b: -b.num_qubits)[0].name)
qc = QuantumCircuit(12)
qc.h(0)
for i in range(11):
    qc.cx(i, i + 1)
qc.measure_all()
isa = generate_preset_pass_manager(optimization_level=0, backend=backend).run(qc)
jobs = [SamplerV2(mode=backend).run([isa] * 4, shots=4000) for _ in range(3)]
print("submitted:", " ".join(j.job_id() for j in jobs), flush=True)
if __import__("sys").argv[1:] == ["cancel"]:
    for j in jobs:
        j.cancel()
    time.sleep(1)
    print("statuses:", " ".join(str(j.status()) for j in jobs))
else:
    print("sleeping", flush=True)
    while True:
        time.sleep(1)
