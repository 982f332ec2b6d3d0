#!/usr/bin/env bash
# Run qiskit-ibm-runtime's own integration suite (test/integration of the sdist of the installed
# version) against the emulated IBM Quantum Platform, on this machine, without Docker:
#
#   bash scripts/client-suite.sh                        the whole suite, then the counts
#   bash scripts/client-suite.sh -x -k "sampler or estimator"     pytest arguments narrow it
#   bash scripts/client-suite.sh test/integration/test_job.py -q
#
# The emulator (python -m qsandbox.platform serve) listens on 127.0.0.1 with a fresh CA; the
# suite's connections to *.cloud.ibm.com:443 are sent to it (scripts/client_suite/sitecustomize.py)
# while TLS still checks the real names. The key is a throwaway made here, never a real one.
#
# The account is set up as IBM's test accounts are: a second instance on the `internal` plan, and
# a job history (scripts/client_suite/seed_history.py). The suite runs in three passes, each against
# a fresh emulator: the tests that need a job to wait in a queue (QUEUE_TESTS below: cancel a
# queued job, see RUNNING, time out) against `--queue-time $QSANDBOX_SUITE_QUEUE_TIME` (default
# 20), the tests written for an ECR Eagle (EAGLE_TESTS) on one, everything else with no queue
# (fast). The last line gives the counts of all passes.
# Environment: QSANDBOX_SUITE_QPU (default ibm_fez), QSANDBOX_SUITE_DIR (download cache),
# QSANDBOX_SUITE_QUEUE_TIME. Exit status: 0 when nothing failed, 1 otherwise.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'client-suite: %s\n' "$*" >&2; }
PY=${PYTHON:-$ROOT/.venv/bin/python}
VERSION=$("$PY" -c 'import qiskit_ibm_runtime; print(qiskit_ibm_runtime.__version__)')
CACHE=${QSANDBOX_SUITE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qsandbox/client-suite}
# The suite runs on this machine (no engine needed) against the emulator, with the client version the
# sandbox image pins: the emulator is what is tested, and a different client would test another API.
PINNED=$(sed -n 's/^qiskit-ibm-runtime==//p' "$ROOT/src/qsandbox/image/requirements.txt")
if [ "$VERSION" != "$PINNED" ]; then
    say "the venv has qiskit-ibm-runtime $VERSION but the image pins $PINNED: run bash scripts/setup.sh first"
    exit 2
fi
SRC=$CACHE/suite-$VERSION  # the sdist's test/ and pyproject.toml (markers), not its package
export PATH="$CACHE/extras-$VERSION/bin:$(dirname "$PY"):$PATH"  # pproxy, as the suite runs it
QUEUE_TIME=${QSANDBOX_SUITE_QUEUE_TIME:-20}

if [ ! -d "$SRC/test/integration" ]; then
    say "fetching the tests of qiskit-ibm-runtime $VERSION (sdist)"
    mkdir -p "$CACHE"
    "$PY" -m pip download --quiet --no-binary :all: --no-deps "qiskit-ibm-runtime==$VERSION" -d "$CACHE" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
    tar -xzf "$CACHE/qiskit_ibm_runtime-$VERSION.tar.gz" -C "$CACHE"
    mkdir -p "$SRC"
    cp -r "$CACHE/qiskit_ibm_runtime-$VERSION/test" "$CACHE/qiskit_ibm_runtime-$VERSION/pyproject.toml" "$SRC/"
fi
# The suite's optional test dependencies, kept out of the project's venv in a directory of their own
# (on PYTHONPATH for the suite only): pproxy (the proxy tests run it), simplejson, and
# qiskit-noise-learning with xarray and pandas (the client-side NoiseLearnerV3 test).
EXTRAS=$CACHE/extras-$VERSION
EXTRA_PACKAGES=(pproxy==2.7.9 simplejson==4.3.0 qiskit-noise-learning==0.1.0 xarray pandas pytz tzdata)
if [ ! -f "$EXTRAS/.complete" ]; then
    say "installing the suite's optional test dependencies into $EXTRAS"
    rm -rf "$EXTRAS"
    # --no-deps: everything else they need is the venv's own (numpy, scipy, qiskit, samplomatic, ...).
    "$PY" -m pip install --quiet --no-deps --target "$EXTRAS" "${EXTRA_PACKAGES[@]}" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
    touch "$EXTRAS/.complete"
fi

# Tests that need a job to stay QUEUED or RUNNING for a while, as on a busy device.
QUEUE_TESTS=(
    test/integration/test_job.py::TestIntegrationJob::test_cancel_job_queued
    test/integration/test_job.py::TestIntegrationJob::test_cancel_job_running
    test/integration/test_job.py::TestIntegrationJob::test_delete_job_queued
    test/integration/test_retrieve_job.py::TestIntegrationRetrieveJob::test_retrieve_job_queued
    test/integration/test_retrieve_job.py::TestIntegrationRetrieveJob::test_retrieve_job_running
    test/integration/test_retrieve_job.py::TestIntegrationRetrieveJob::test_retrieve_pending_jobs
    test/integration/test_ibm_job.py::TestIBMJob::test_cancel
    test/integration/test_ibm_job.py::TestIBMJob::test_wait_for_final_state_timeout
    test/integration/test_results.py::TestIntegrationResults::test_result_timeout
    test/integration/test_results.py::TestIntegrationResults::test_wait_for_final_state_timeout
)

# Tests written for an Eagle with ECR gates on qubits (0, 1) and (1, 2), as IBM's test_eagle
# devices have: they run in a pass of their own with QISKIT_IBM_QPU=test_eagle (served from the
# FakeKyiv snapshot, which has those gates; ibm_brisbane's go the other way, (1, 0)).
EAGLE_TESTS=(
    test/integration/test_noise_learner.py::TestIntegrationNoiseLearner::test_learner_plus_estimator
)

WORK=$(mktemp -d)
EMULATOR=
stop_emulator() {
    if [ -n "$EMULATOR" ]; then kill "$EMULATOR" 2>/dev/null || true; wait "$EMULATOR" 2>/dev/null || true; fi
    EMULATOR=
}
cleanup() { stop_emulator; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# The suite's conftest looks for IBM's staging device (a name starting test_eagle) as its default
# backend: the emulator serves an Eagle under that name too (FakeKyiv: see EAGLE_TESTS).
BACKENDS=$("$PY" -c 'from qsandbox.common.platform_constants import DEFAULT_BACKENDS as d; print(",".join(d))'),test_eagle=FakeKyiv
CRN=$("$PY" -c 'from qsandbox.common.platform_constants import INSTANCE_CRN; print(INSTANCE_CRN)')
export PYTHONPATH="$ROOT/scripts/client_suite:$EXTRAS" REQUESTS_CA_BUNDLE="$WORK/ca.pem" \
    QISKIT_IBM_TOKEN="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')" \
    QISKIT_IBM_URL=https://cloud.ibm.com QISKIT_IBM_INSTANCE="$CRN" QISKIT_IBM_QPU="${QSANDBOX_SUITE_QPU:-ibm_fez}"

start_emulator() {  # $1: queue time
    QSANDBOX_SUITE_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export QSANDBOX_SUITE_PORT
    QSANDBOX_PLATFORM_BACKENDS=$BACKENDS QSANDBOX_PLATFORM_EXTRA_PLANS=internal PYTHONPATH= \
        "$PY" -m qsandbox.platform serve --host 127.0.0.1 --port "$QSANDBOX_SUITE_PORT" --ca-out "$WORK/ca.pem" \
        --queue-time "$1" >"$WORK/platform.log" 2>&1 &
    EMULATOR=$!
    for _ in $(seq 1 150); do
        grep -q "qsandbox-platform ready" "$WORK/platform.log" 2>/dev/null && break
        kill -0 "$EMULATOR" 2>/dev/null || { cat "$WORK/platform.log" >&2; say "the emulator did not start"; exit 125; }
        sleep 0.2
    done
    grep -q "qsandbox-platform ready" "$WORK/platform.log" || { say "the emulator did not start in 30 s"; exit 125; }
    (cd "$WORK" && "$PY" "$ROOT/scripts/client_suite/seed_history.py" 2>&1 | grep '^client-suite' >&2) \
        || { say "seeding the job history failed"; exit 125; }
}

run_pass() {  # $1: pass name, $2: queue time, then pytest arguments
    local name=$1 queue=$2
    shift 2
    say "pass '$name': emulator with --queue-time $queue"
    rm -f "$WORK/ca.pem"
    start_emulator "$queue"
    local status=0
    # `test` is a package of the suite's root; the client tested is the installed one.
    (cd "$SRC" && "$PY" -m pytest -p no:cacheprovider --rootdir "$SRC" --junitxml "$WORK/$name.xml" "$@") || status=$?
    stop_emulator
    return $status
}

# Arguments naming tests run as given (one pass; with the queue if they are all queue tests).
named=0
for arg in "$@"; do case $arg in test/*) named=1 ;; esac; done
status=0
record() {  # pytest's exit status 5 is "nothing collected" (a -k that selects no queue test)
    [ "$1" = 0 ] || [ "$1" = 5 ] || status=1
}
if [ $named = 1 ]; then
    queue=0
    for arg in "$@"; do
        for q in "${QUEUE_TESTS[@]}"; do [ "$arg" = "$q" ] && queue=$QUEUE_TIME; done
    done
    for arg in "$@"; do
        for e in "${EAGLE_TESTS[@]}"; do [ "$arg" = "$e" ] && export QISKIT_IBM_QPU=test_eagle; done
    done
    rc=0; run_pass given "$queue" "$@" || rc=$?; record $rc
    passes=(given)
else
    deselect=()
    for q in "${QUEUE_TESTS[@]}" "${EAGLE_TESTS[@]}"; do deselect+=(--deselect "$q"); done
    rc=0; run_pass main 0 test/integration "${deselect[@]}" "$@" || rc=$?; record $rc
    rc=0; run_pass queue "$QUEUE_TIME" "${QUEUE_TESTS[@]}" "$@" || rc=$?; record $rc
    rc=0; QISKIT_IBM_QPU=test_eagle run_pass eagle 0 "${EAGLE_TESTS[@]}" "$@" || rc=$?; record $rc
    passes=(main queue eagle)
fi
(cd "$WORK" && "$PY" - "${passes[@]}" <<'EOF'
import sys
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped

totals = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
for name in sys.argv[1:]:
    if not Path(f"{name}.xml").exists():
        continue
    for suite in JUnitXml.fromfile(f"{name}.xml"):
        for case in suite:
            totals["tests"] += 1
            kinds = {type(r) for r in case.result}
            if Failure in kinds:
                totals["failed"] += 1
            elif Error in kinds:
                totals["errors"] += 1
            elif Skipped in kinds:
                totals["skipped"] += 1
            else:
                totals["passed"] += 1
print("client-suite: " + ", ".join(f"{v} {k}" for k, v in totals.items()), file=sys.stderr)
EOF
) || true
exit $status
