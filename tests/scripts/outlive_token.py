"""Use the platform, outlive the first access token, use it again (short-lived refresh)."""

import sys
import time

from qiskit_ibm_runtime import QiskitRuntimeService

service = QiskitRuntimeService()
print("first:", len(service.backends()), flush=True)
time.sleep(float(sys.argv[1]))
again = QiskitRuntimeService()  # a new client: a fresh exchange at the token endpoint
print("after:", len(again.backends()), again.backend("fake_manila").status().operational, flush=True)
