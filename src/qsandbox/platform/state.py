"""Jobs and sessions, kept in memory, and the worker pool that runs jobs.

Submitting only records the job and queues it, so ``POST /jobs`` returns at once like the real
service. A job moves Queued -> Running -> Completed/Failed/Cancelled; a job cancelled while
queued never runs, and a job cancelled while running is killed.

Each job's simulation runs in a forked child process: Aer holds the GIL for the whole
simulation (seen: a 244 s noisy 12-qubit run froze every other request), so running it in a
thread would make the whole platform stop answering. Forking after the device's simulator is
built shares it copy-on-write, and cancelling a running job is a kill. A child that dies (most
often the kernel's OOM killer) fails its job with a message that says so.

With a queue time (``serve --queue-time``) a job stays Queued for most of it and Running for
the rest, however quick its simulation, so a script sees what it sees on a busy device.

Every job and session belongs to the tenant (``auth.Credentials``) and the instance that made it:
each look-up names both, so another tenant's job is "not found", as on the service. Only the
devices' queues are common to all, as they are on the service.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import signal
import threading
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .backends import Device
from .errors import ProgramError
from .programs import Outcome, run_program
from .simulation import TooLarge

log = logging.getLogger(__name__)

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "Queued",
    "Running",
    "Completed",
    "Failed",
    "Cancelled",
)
FINAL = (COMPLETED, FAILED, CANCELLED)

REASON_CODE_FAILED = 1517
"""Reported with a failed job (the client shows "Error code <code>; <reason>")."""

QUEUED_SHARE = 0.75
"""Share of the queue time a job spends Queued; it is Running for at least the rest."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(ts: dt.datetime | None) -> str | None:
    return ts.isoformat(timespec="microseconds").replace("+00:00", "Z") if ts else None


def new_id() -> str:
    """Job and session ids look like the real service's (20 lowercase alphanumerics)."""
    return uuid.uuid4().hex[:20]


@dataclass
class Job:
    id: str
    program_id: str
    backend: str
    owner: str  # tenant
    crn: str
    body: str  # raw POST /jobs JSON, decoded by the worker
    params: dict[str, Any]
    session_id: str | None
    tags: list[str]
    private: bool
    calibration_id: str | None = None
    created: dt.datetime = field(default_factory=utcnow)
    status: str = QUEUED
    reason: str | None = None
    reason_code: int | None = None
    running_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    result: str | None = None
    logs: list[str] = field(default_factory=list)
    estimated_start: dt.datetime | None = None
    estimated_seconds: float = 1.0
    wake: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_json(self, exclude_params: bool) -> dict[str, Any]:
        state: dict[str, Any] = {"status": self.status}
        if self.reason:
            state["reason"] = self.reason
        if self.reason_code:
            state["reason_code"] = self.reason_code
        body: dict[str, Any] = {
            "id": self.id,
            "backend": self.backend,
            "state": state,
            "status": self.status,
            "program": {"id": self.program_id},
            "created": iso(self.created),
            "end_time": iso(self.finished_at),
            "runtime": "",
            "session_id": self.session_id,
            "tags": list(self.tags),
            "private": self.private,
            "user_id": "qsandbox",
            "usage": {"seconds": self.usage_seconds(), "quantum_seconds": self.usage_seconds()},
            "estimated_running_time_seconds": self.estimated_seconds,
        }
        if self.calibration_id is not None:
            body["calibration_id"] = self.calibration_id
        if not exclude_params and not self.private:  # a private job's inputs are never returned
            body["params"] = self.params
        return body

    def usage_seconds(self) -> int:
        if self.running_at and self.finished_at:
            return max(1, round((self.finished_at - self.running_at).total_seconds()))
        return 0


@dataclass
class Session:
    id: str
    backend: str
    owner: str  # tenant
    crn: str
    mode: str
    max_ttl: int
    created: dt.datetime = field(default_factory=utcnow)
    accepting_jobs: bool = True
    closed_at: dt.datetime | None = None

    def to_json(self, jobs: list[Job]) -> dict[str, Any]:
        started = [j.running_at for j in jobs if j.running_at]
        done = [j.finished_at for j in jobs if j.finished_at]
        if self.closed_at:
            state = "closed"
        elif any(j.status in (QUEUED, RUNNING) for j in jobs):
            state = "active"
        else:
            state = "open" if self.accepting_jobs else "inactive"
        return {
            "id": self.id,
            "backend_name": self.backend,
            "mode": self.mode,
            "state": state,
            "accepting_jobs": self.accepting_jobs,
            "max_ttl": self.max_ttl,
            "interactive_ttl": 60,
            "active_ttl": self.max_ttl,
            "started_at": iso(self.created),
            "activated_at": iso(min(started)) if started else None,
            "last_job_started": iso(max(started)) if started else None,
            "last_job_completed": iso(max(done)) if done else None,
            "closed_at": iso(self.closed_at),
            "elapsed_time": sum(j.usage_seconds() for j in jobs),
            "timestamps": [],
        }


class Store:
    """All jobs and sessions, guarded by one lock.

    Each job has a thread (from a pool large enough for queued jobs to wait in); at most
    ``workers`` simulations run at a time, and one at a time per device.
    """

    def __init__(self, workers: int = 2, queue_time: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._sessions: dict[str, Session] = {}
        self._children: dict[str, multiprocessing.process.BaseProcess] = {}
        self._deleted_usage: dict[tuple[str, str], int] = {}  # (tenant, crn) -> usage of deleted jobs
        self._simulations = threading.BoundedSemaphore(workers)
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="qsandbox-job")
        self.queue_time = max(0.0, queue_time)
        self.started = utcnow()

    # -- jobs ---------------------------------------------------------------------------------

    def submit(self, job: Job, device: Device) -> None:
        with self._lock:
            ahead = sum(1 for j in self._jobs.values() if j.backend == job.backend and j.status in (QUEUED, RUNNING))
            job.estimated_start = job.created + dt.timedelta(seconds=self.queue_time * QUEUED_SHARE + ahead)
            job.estimated_seconds = max(1.0, round(self.queue_time * (1 - QUEUED_SHARE), 1))
            self._jobs[job.id] = job
        self._pool.submit(self._execute, job, device)

    def position(self, job: Job) -> int | None:
        """1-based position of a queued job among its device's queued jobs."""
        with self._lock:
            if job.status != QUEUED:
                return None
            queued = [j for j in self._jobs.values() if j.backend == job.backend and j.status == QUEUED]
        return sorted(queued, key=lambda j: j.created).index(job) + 1 if job in queued else None

    def _execute(self, job: Job, device: Device) -> None:
        try:
            self._execute_job(job, device)
        except Exception:  # a bug here must fail the job, not leave it Queued forever
            log.exception("job %s failed in the emulator", job.id)
            self._finish(job, None, "Job failed in the emulated platform.")

    def _execute_job(self, job: Job, device: Device) -> None:
        queued_for = self.queue_time * QUEUED_SHARE
        if queued_for and job.wake.wait(queued_for):  # woken early only by a cancel
            return
        # The device lock is taken before the job turns Running: a job waiting for its device
        # is still Queued, so cancelling it means it never runs.
        with device.lock, self._simulations:
            with self._lock:
                if job.status != QUEUED:
                    return
                job.status, job.running_at = RUNNING, utcnow()
            _ = device.target  # built once, before the fork, so children share it
            outcome = self._run_in_child(job, device)
            rest = self.queue_time - queued_for - (utcnow() - job.running_at).total_seconds()
            if rest > 0:  # Running for at least the rest of the queue time, as the device is busy
                job.wake.wait(rest)
        self._finish(job, outcome.result, outcome.reason, outcome.logs)

    def _finish(self, job: Job, result: str | None, reason: str | None, logs: list[str] | None = None) -> None:
        with self._lock:
            job.finished_at = utcnow()
            job.body = ""  # decoded and run: the raw request is not needed any more
            job.logs.extend(logs or [])
            if job.status == CANCELLED:
                return
            if reason is None:
                job.status, job.result = COMPLETED, result
            else:
                job.status, job.reason, job.reason_code = FAILED, reason[:2000], REASON_CODE_FAILED

    def _run_in_child(self, job: Job, device: Device) -> Outcome:
        ctx = multiprocessing.get_context("fork")
        receiver, sender = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_child, args=(sender, job.program_id, job.body, device), daemon=True)
        with self._lock:
            if job.status != RUNNING:  # cancelled between the two locks
                return Outcome(None, None)
            child.start()
            self._children[job.id] = child
        sender.close()
        try:
            outcome: Outcome = receiver.recv()
        except EOFError:  # killed by cancel(), or the child died
            outcome = Outcome(None, None)
        finally:
            receiver.close()
            child.join()
            with self._lock:
                self._children.pop(job.id, None)
        if outcome.result is None and outcome.reason is None and job.status != CANCELLED:
            outcome = Outcome(None, _death_reason(child.exitcode))
        return outcome

    def take_result(self, job: Job) -> str | None:
        """Hand out a result once (private jobs): later reads get nothing."""
        with self._lock:
            result, job.result = job.result, ""
        return result

    def delete(self, job: Job) -> None:
        """Forget a job (cancelling it first if needed); its usage still counts."""
        self.cancel(job)
        with self._lock:
            if self._jobs.pop(job.id, None) is not None:
                where = (job.owner, job.crn)
                self._deleted_usage[where] = self._deleted_usage.get(where, 0) + job.usage_seconds()

    def usage_seconds(self, owner: str, crn: str) -> int:
        with self._lock:
            live = sum(j.usage_seconds() for j in self._jobs.values() if (j.owner, j.crn) == (owner, crn))
            return live + self._deleted_usage.get((owner, crn), 0)

    def job(self, job_id: str, owner: str, crn: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job and (job.owner, job.crn) == (owner, crn) else None

    def jobs(self, owner: str, crn: str) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if (j.owner, j.crn) == (owner, crn)]

    def cancel(self, job: Job) -> bool:
        """Cancel a job; ``False`` if it is already final."""
        with self._lock:
            if job.status in FINAL:
                return False
            job.status, job.reason = CANCELLED, "Cancelled by the user."
            if job.running_at is None:
                job.finished_at = utcnow()
            child = self._children.get(job.id)
            if child is not None:
                child.kill()  # a cancelled job stops using the device at once
            job.wake.set()
            return True

    def queue_length(self, backend: str) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.backend == backend and j.status in (QUEUED, RUNNING))

    # -- sessions -----------------------------------------------------------------------------

    def add_session(self, session: Session) -> None:
        with self._lock:
            self._sessions[session.id] = session

    def session(self, session_id: str, owner: str, crn: str) -> Session | None:
        with self._lock:
            session = self._sessions.get(session_id)
        return session if session and (session.owner, session.crn) == (owner, crn) else None

    def session_jobs(self, session: Session) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.session_id == session.id and j.owner == session.owner]

    def close_session(self, session: Session, cancel_jobs: bool) -> None:
        with self._lock:
            session.accepting_jobs = False
            if cancel_jobs:
                session.closed_at = session.closed_at or utcnow()
        if cancel_jobs:
            for job in self.session_jobs(session):
                self.cancel(job)

    def shutdown(self) -> None:
        """Cancel every job not yet final (a running simulation is killed) and stop the pool.

        Otherwise the interpreter's exit would wait for the pool's threads, and so for every
        simulation still running, however long.
        """
        with self._lock:
            every = list(self._jobs.values())
        for job in every:
            if job.status in (QUEUED, RUNNING):
                self.cancel(job)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _death_reason(exitcode: int | None) -> str:
    if exitcode == -signal.SIGKILL:
        return (
            "Job failed during execution: the simulation process was killed (SIGKILL), most likely "
            "for running out of memory; simulate fewer active qubits"
        )
    return f"Job failed during execution: the simulation process died (exit code {exitcode})"


def _child(sender: Any, program_id: str, body: str, device: Device) -> None:
    """In the forked child: run the program and send its ``Outcome`` back."""
    try:
        out = run_program(program_id, body, device)
    except (ProgramError, TooLarge) as ex:
        out = Outcome(None, str(ex))
    except MemoryError:
        out = Outcome(None, "Job failed during execution: the simulation ran out of memory")
    except Exception as ex:  # noqa: BLE001 - a crashed simulation must fail the job, not hang it
        # Not through logging: its lock may have been held by another thread at fork time.
        os.write(2, ("job crashed:\n" + traceback.format_exc()).encode(errors="replace"))
        out = Outcome(None, f"Job failed during execution: {type(ex).__name__}: {ex}")
    sender.send(out)
    sender.close()
