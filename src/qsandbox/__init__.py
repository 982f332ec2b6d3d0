"""qsandbox: run Qiskit scripts with the IBM Quantum API key only in a throwaway container."""

__version__ = "0.2.1.dev1"
