"""Submit a Bell job and watch it wait in the queue: statuses as they change, and result(timeout=5)."""

import json
import time

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2

service = QiskitRuntimeService()
backend = service.backend("fake_manila")
qc = QuantumCircuit(2)
qc.h(0)
qc.cx(0, 1)
qc.measure_all()
isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
job = SamplerV2(mode=backend).run([isa], shots=100)
t0 = time.monotonic()
try:
    job.result(timeout=5)
    timed_out = ""
except Exception as e:  # noqa: BLE001 - the class is what the test checks
    timed_out = type(e).__name__
seen: list[tuple[str, float]] = []
while time.monotonic() - t0 < 90:
    status = str(job.status())
    if not seen or seen[-1][0] != status:
        seen.append((status, round(time.monotonic() - t0, 1)))
    if status in ("DONE", "ERROR", "CANCELLED"):
        break
    time.sleep(0.5)
print(json.dumps({"seen": seen, "timed_out": timed_out}))
