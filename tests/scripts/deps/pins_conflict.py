# /// script
# dependencies = ["tabulate", "qiskit-ibm-runtime<0.40"]
# ///
print("never runs: the image's qiskit-ibm-runtime is pinned")
