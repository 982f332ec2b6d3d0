"""Try the platform with a key other than the one the run was given; print what the client says.

"refused:" only when IAM itself refused the key (HTTP 400, "Provided API key could not be found",
BXNIM0415E, somewhere in the exception's chain); any other failure prints "error:".
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
    QiskitRuntimeService(channel="ibm_quantum_platform", token="wrong-" + "k" * 38)
    print("accepted")
except Exception as e:  # noqa: BLE001
    print("refused:" if iam_refusal(e) else "error:", type(e).__name__, str(e)[:200])
