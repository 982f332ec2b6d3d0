# /// script
# requires-python = ">=3.11"
# dependencies = ["tabulate>=0.9"]
# ///
"""Needs a package the sandbox image lacks (tabulate), declared inline (PEP 723)."""

import os

import tabulate

print(tabulate.tabulate([["00", 503], ["11", 497]], headers=["state", "count"]))
print("bytecode from the build:", os.path.exists(tabulate.__cached__))
