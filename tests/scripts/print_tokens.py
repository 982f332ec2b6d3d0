"""A script that prints the IAM tokens its client obtained (the refresh token is opaque)."""

import base64
import gc
import sys

from ibm_cloud_sdk_core.token_managers.iam_request_based_token_manager import IAMRequestBasedTokenManager
from qiskit_ibm_runtime import QiskitRuntimeService

service = QiskitRuntimeService()
print("backends:", len(service.backends()), flush=True)
managers = [o for o in gc.get_objects() if isinstance(o, IAMRequestBasedTokenManager) and o.refresh_token]
assert managers, "the client obtained no token"
refresh = managers[0].refresh_token
print("refresh length:", len(refresh), "jwt-shaped:", refresh.startswith("eyJ"))
print("refresh:", refresh)
print("refresh b64:", base64.b64encode(refresh.encode()).decode())
for c in "slow:" + refresh + "\n":
    sys.stdout.write(c)
    sys.stdout.flush()
print("access:", managers[0].access_token, file=sys.stderr)
print("done")
