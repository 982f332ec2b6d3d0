"""Needs tabulate too, but without inline metadata: `--requirements requirements.txt` supplies it."""

import tabulate

print(tabulate.tabulate([["x", 1]], headers=["name", "n"]))
