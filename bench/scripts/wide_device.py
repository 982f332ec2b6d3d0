"""Speed on the emulated platform's 27-qubit fake_kolkata (bench.py's `emulator` step): an
estimator with X and Z on all 27 qubits after a 3-qubit GHZ, and a Bell pair measured with every
qubit (2000 shots). The correctness of both is tests/unit/test_platform_client.py's; here, seconds."""

import time

from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import EstimatorV2, QiskitRuntimeService, SamplerV2

backend = QiskitRuntimeService().backend("fake_kolkata")
pm = generate_preset_pass_manager(optimization_level=1, backend=backend)

ghz = QuantumCircuit(3)
ghz.h(0)
ghz.cx(0, 1)
ghz.cx(1, 2)
isa = pm.run(ghz)
estimator = EstimatorV2(mode=backend)
estimator.options.resilience_level = 2
started = time.monotonic()
estimator.run([(isa, [SparsePauliOp("X" * 27), SparsePauliOp("Z" * 27)])]).result()
print("wide estimator seconds:", round(time.monotonic() - started, 2))

bell = QuantumCircuit(2)
bell.h(0)
bell.cx(0, 1)
isa = pm.run(bell)
isa.measure_all()
started = time.monotonic()
SamplerV2(mode=backend).run([isa], shots=2000).result()
print("wide sampler seconds:", round(time.monotonic() - started, 2))
