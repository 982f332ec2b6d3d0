"""Inside the container, after an aborted run: cancel the Runtime jobs the script left running.

A process of its own (`python -c entry.CANCEL STARTED_AT`), spawned by the entry point once every
process of the script is dead: it reads the saved account, which the script could have rewritten,
so none of this runs in PID 1. Its lines on stdout become the entry point's notes.

An interrupted run must not keep burning QPU time. The entry point knows when the script started;
it lists this instance's pending jobs created since then, cancels each, and cancels the sessions
(or batches) they belong to. Bounded in time: a failing IAM makes the client stall for minutes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

LIMIT = 20.0  # seconds for the whole clean-up


def _cancel(started_at: float, say: Callable[[str], None]) -> None:
    from qiskit_ibm_runtime import QiskitRuntimeService, Session  # type: ignore[import-untyped]  # no py.typed

    service = QiskitRuntimeService()
    since = datetime.fromtimestamp(started_at, tz=UTC) - timedelta(seconds=5)
    jobs = service.jobs(pending=True, created_after=since, limit=None)
    sessions = set()
    for job in jobs:
        try:
            job.cancel()
            say(f"cancelled job {job.job_id()}")
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            say(f"could not cancel job {job.job_id()}: {type(e).__name__}")
        if job.session_id:
            sessions.add(job.session_id)
    for session_id in sessions:
        try:
            Session.from_id(session_id, service=service).cancel()
            say(f"cancelled session {session_id}")
        except Exception as e:  # noqa: BLE001
            say(f"could not cancel session {session_id}: {type(e).__name__}")
    # Ask the platform again rather than trusting the cancels.
    left = service.jobs(pending=True, created_after=since, limit=None)
    if left:
        say(f"{len(left)} job(s) of this run still pending: " + " ".join(j.job_id() for j in left))
    else:
        say("no Runtime job of this run is left queued or running")


def cancel_jobs_since(started_at: float, say: Callable[[str], None]) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            _cancel(started_at, say)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(LIMIT)
    if t.is_alive():
        say(f"job clean-up did not finish within {LIMIT:.0f} s; check your jobs on the platform")
    elif errors:
        say(f"job clean-up failed: {type(errors[0]).__name__}; check your jobs on the platform")


def main(argv: list[str]) -> None:
    import sys

    def say(text: str) -> None:
        sys.stdout.write(f"{text}\n")
        sys.stdout.flush()

    cancel_jobs_since(float(argv[0]), say)
