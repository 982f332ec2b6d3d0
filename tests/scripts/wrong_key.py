"""Try the platform with a key other than the one the run was given; print what the client says."""

from qiskit_ibm_runtime import QiskitRuntimeService

try:
    QiskitRuntimeService(channel="ibm_quantum_platform", token="wrong-" + "k" * 38)
    print("accepted")
except Exception as e:  # noqa: BLE001
    print("refused:", type(e).__name__, str(e)[:200])
