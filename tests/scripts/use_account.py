"""Use the saved account the normal way; print whether the platform accepted it.

"refused:" only when IAM itself refused the key (BXNIM0415E, "Provided API key could not be
found", HTTP 400: what IAM answers for a deleted or unknown key, somewhere in the exception's
chain); any other failure (network, TLS, a bug) prints "error:" and cannot pass for a refusal.
"""

from qiskit_ibm_runtime import QiskitRuntimeService


def iam_refusal(e: BaseException) -> bool:
    seen: BaseException | None = e
    while seen is not None:
        status = getattr(seen, "code", None) or getattr(seen, "status_code", None)
        if status == 400 and "Provided API key could not be found" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


try:
    service = QiskitRuntimeService()
    print("accepted:", len(service.backends()), "backends")
except Exception as e:  # noqa: BLE001
    if iam_refusal(e):
        print("refused:", type(e).__name__)
    else:
        print("error:", type(e).__name__, str(e)[:300])
