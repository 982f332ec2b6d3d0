"""Bell pair on the least busy device; prints the counts as JSON.

Uses the client-side Sampler (on the Executor program), which IBM now recommends over SamplerV2
(deprecated since qiskit-ibm-runtime 0.50.0).
"""

import json

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import QiskitRuntimeService
from qiskit_ibm_runtime.executor_sampler import Sampler

service = QiskitRuntimeService()
backend = service.least_busy(operational=True, simulator=False)

circuit = QuantumCircuit(2)
circuit.h(0)
circuit.cx(0, 1)
circuit.measure_all()
isa_circuit = generate_preset_pass_manager(optimization_level=1, backend=backend).run(circuit)

job = Sampler(mode=backend).run([isa_circuit], shots=1000)
print("backend:", backend.name, "job:", job.job_id())
counts = job.result()[0].data.meas.get_counts()
print("counts:", json.dumps(counts, sort_keys=True))
