import qiskit_ibm_runtime  # noqa: F401

print("ready", flush=True)
