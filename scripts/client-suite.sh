#!/usr/bin/env bash
# Run qiskit-ibm-runtime's own integration suite (test/integration of the sdist of the installed
# version) against the emulated IBM Quantum Platform, on this machine, without Docker:
#
#   bash scripts/client-suite.sh [PYTEST ARGS]...      e.g.  -x -k "sampler or estimator"
#   bash scripts/client-suite.sh test/integration/test_job.py -q
#
# The emulator (python -m qsandbox.platform serve) listens on 127.0.0.1 with a fresh CA; the
# suite's connections to *.cloud.ibm.com:443 are sent to it (scripts/client_suite/sitecustomize.py)
# while TLS still checks the real names. The key is a throwaway made here, never a real one.
# Environment: QSANDBOX_SUITE_QPU (default ibm_fez), QSANDBOX_SUITE_DIR (download cache),
# QSANDBOX_SUITE_QUEUE_TIME (passed to --queue-time, default 0).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
VERSION=$("$PY" -c 'import qiskit_ibm_runtime; print(qiskit_ibm_runtime.__version__)')
CACHE=${QSANDBOX_SUITE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qsandbox/client-suite}
SRC=$CACHE/suite-$VERSION  # the sdist's test/ and pyproject.toml (markers), not its package
if [ ! -d "$SRC/test/integration" ]; then
    mkdir -p "$CACHE"
    "$PY" -m pip download --quiet --no-binary :all: --no-deps "qiskit-ibm-runtime==$VERSION" -d "$CACHE"
    tar -xzf "$CACHE/qiskit_ibm_runtime-$VERSION.tar.gz" -C "$CACHE"
    mkdir -p "$SRC"
    cp -r "$CACHE/qiskit_ibm_runtime-$VERSION/test" "$CACHE/qiskit_ibm_runtime-$VERSION/pyproject.toml" "$SRC/"
fi
WORK=$(mktemp -d)
# The suite's conftest looks for IBM's staging device (a name starting test_eagle) as its default
# backend: the emulator serves an Eagle under that name too.
BACKENDS=$("$PY" -c 'from qsandbox.common.platform_constants import DEFAULT_BACKENDS as d; print(",".join(d))'),test_eagle=FakeBrisbane
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
QSANDBOX_PLATFORM_BACKENDS=$BACKENDS "$PY" -m qsandbox.platform serve --host 127.0.0.1 --port "$PORT" --ca-out "$WORK/ca.pem" \
    --queue-time "${QSANDBOX_SUITE_QUEUE_TIME:-0}" >"$WORK/platform.log" 2>&1 &
EMULATOR=$!
cleanup() { kill "$EMULATOR" 2>/dev/null || true; wait "$EMULATOR" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    grep -q "qsandbox-platform ready" "$WORK/platform.log" 2>/dev/null && break
    kill -0 "$EMULATOR" 2>/dev/null || { cat "$WORK/platform.log"; exit 125; }
    sleep 0.2
done
grep -q "qsandbox-platform ready" "$WORK/platform.log" || { echo "emulator did not start" >&2; exit 125; }
CRN=$("$PY" -c 'from qsandbox.common.platform_constants import INSTANCE_CRN; print(INSTANCE_CRN)')
cd "$SRC"
TARGETS=(test/integration)  # unless the arguments name tests themselves
for arg in "$@"; do case $arg in test/*) TARGETS=() ;; esac; done
# `test` is a package of the suite's root; the client tested is the installed one.
env QSANDBOX_SUITE_PORT="$PORT" PYTHONPATH="$ROOT/scripts/client_suite" REQUESTS_CA_BUNDLE="$WORK/ca.pem" \
    QISKIT_IBM_TOKEN="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')" \
    QISKIT_IBM_URL=https://cloud.ibm.com QISKIT_IBM_INSTANCE="$CRN" \
    QISKIT_IBM_QPU="${QSANDBOX_SUITE_QPU:-ibm_fez}" \
    "$PY" -m pytest -p no:cacheprovider --rootdir "$SRC" "${TARGETS[@]}" "$@"
