"""Beside the runs (layer 2 of the launcher, apart from `run`): what checks a machine.

- `doctor`: what this machine's engine and host give a sandbox;
- `audit`: the leak search, every place a key could be left, each with its own control;
- `sweep`: whatever a killed launcher left behind;
- `labclient`: a lab's JupyterLab as a browser uses it (the audit's lab path drives a kernel with it).
"""
