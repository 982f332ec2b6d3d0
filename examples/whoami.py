"""Show which account, instance and backends this script would use (never the API key)."""

from qiskit_ibm_runtime import QiskitRuntimeService

service = QiskitRuntimeService()
account = {k: v for k, v in service.active_account().items() if k != "token"}
print("channel:", service.channel)
print("instance:", service.active_instance())
print("account:", account)
for backend in service.backends():
    print(f"backend: {backend.name} ({backend.num_qubits} qubits)")
print("least busy:", service.least_busy(operational=True, simulator=False).name)
