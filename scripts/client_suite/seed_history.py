"""Give the emulated account a job history before the suite runs, as IBM's test accounts have one.

Some of the suite's tests list the account's jobs first thing and need some there:
``test_jobs_before_backend`` one, ``test_retrieve_jobs_status`` (``limit=5, skip=5``) more than
five finished on the device (with fewer, the client 0.51's ``service.jobs()`` asks for the next
page forever). Six Bell jobs on the suite's device, in each instance of the account, are
submitted and waited for, through the real client, as a user's script would do it.
"""

from __future__ import annotations

import os
import warnings

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2

warnings.filterwarnings("ignore", category=DeprecationWarning)

token, url = os.environ["QISKIT_IBM_TOKEN"], os.environ["QISKIT_IBM_URL"]
account = QiskitRuntimeService(
    channel="ibm_quantum_platform", token=token, instance=os.environ["QISKIT_IBM_INSTANCE"], url=url
)
for instance in account.instances():  # every instance: a service without one may list any of them
    service = QiskitRuntimeService(channel="ibm_quantum_platform", token=token, instance=instance["crn"], url=url)
    backend = service.backend(os.environ["QISKIT_IBM_QPU"])
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(bell)
    jobs = [SamplerV2(mode=backend).run([isa], shots=100) for _ in range(6)]
    for job in jobs:
        job.result()
    print(
        f"client-suite: job history seeded: {len(jobs)} Bell jobs on {backend.name} in {instance['name']}", flush=True
    )
