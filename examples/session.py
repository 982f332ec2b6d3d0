"""Two sampler jobs in one session (falls back to a batch where sessions are not offered)."""

import json

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2, Session

service = QiskitRuntimeService()
backend = service.least_busy(operational=True, simulator=False)

bell = QuantumCircuit(2)
bell.h(0)
bell.cx(0, 1)
bell.measure_all()
ghz = QuantumCircuit(3)
ghz.h(0)
ghz.cx(0, 1)
ghz.cx(1, 2)
ghz.measure_all()
pm = generate_preset_pass_manager(optimization_level=1, backend=backend)

with Session(backend=backend) as session:
    print("session:", session.session_id)
    sampler = SamplerV2(mode=session)
    for name, circuit in (("bell", bell), ("ghz", ghz)):
        job = sampler.run([pm.run(circuit)], shots=500)
        counts = job.result()[0].data.meas.get_counts()
        print("job:", name, job.job_id())
        print("counts:", json.dumps(counts, sort_keys=True))
