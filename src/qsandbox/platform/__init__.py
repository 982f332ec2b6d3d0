"""Emulated IBM Quantum Platform.

One HTTPS server that answers, under the real host names, everything the unmodified
``qiskit-ibm-runtime`` client talks to (IAM, Global Search, Global Catalog, Resource Controller,
IAM Identity and the Runtime API), and really runs circuits on noisy Aer simulators of the
client's fake backends. Start it with ``python -m qsandbox.platform serve``.
"""
