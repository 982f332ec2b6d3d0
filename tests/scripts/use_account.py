"""Use the saved account the normal way; print whether the platform accepted it."""

from qiskit_ibm_runtime import QiskitRuntimeService

try:
    service = QiskitRuntimeService()
    print("accepted:", len(service.backends()), "backends")
except Exception as e:  # noqa: BLE001
    print("refused:", type(e).__name__)
