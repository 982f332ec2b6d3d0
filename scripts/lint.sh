#!/usr/bin/env bash
# The checks CI makes before the tests (and pre-commit makes before a commit), with .venv's tools:
# lint, format, types (strict on the package, looser on tests and bench: both in pyproject.toml's
# [tool.mypy]), and the import contracts that keep launcher, inside and platform apart
# (pyproject.toml, [tool.importlinter]).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
step() { printf 'lint: %s\n' "$*" >&2; }
step "ruff check";          "$bin/ruff" check .
step "ruff format --check"; "$bin/ruff" format --check .
step "mypy src";            "$bin/mypy" src
# Tests: Popen's optional streams and untyped Qiskit are noise there; hostile scripts are
# insecure and odd on purpose and run only inside the sandbox. Tests patch what a module imported
# (settings.os, doctor.image), which strict's no_implicit_reexport would refuse: --implicit-reexport;
# --ignore-missing-imports leaves src's ignores for untyped Qiskit unused: --no-warn-unused-ignores.
step "mypy tests bench";    "$bin/mypy" --implicit-reexport --no-warn-unused-ignores --ignore-missing-imports \
                              --disable-error-code union-attr \
                              --exclude 'tests/hostile/' tests bench
step "lint-imports";        "$bin/lint-imports"
step "all clean"
