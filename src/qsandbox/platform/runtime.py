"""Runtime API (``[region.]quantum.cloud.ibm.com/api/v1``): backends, jobs, sessions, usage.

Every call needs a valid access token (401 otherwise, like the service) and the ``Service-CRN``
of the instance (403 otherwise). Jobs, sessions and usage are only visible to the tenant (the key,
with the keys it made: ``auth.Credentials``) and through the instance that created them: any other
caller gets the 404 the service gives for a job that is not in its instance.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse

from ..common import platform_constants as constants
from .backends import Device
from .errors import platform_error
from .iam import bearer_tenant
from .programs import PROGRAMS
from .state import FINAL, QUEUED, RUNNING, Job, Session, Store, iso, new_id

if TYPE_CHECKING:
    from .app import Platform

router = APIRouter(prefix="/api/v1")


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


@dataclass(frozen=True)
class Caller:
    """Whose the request is: the token's tenant, and the instance named by ``Service-CRN``."""

    tenant: str
    crn: str


def authorize(request: Request) -> Caller:
    """The caller, once token and ``Service-CRN`` check out."""
    tenant = bearer_tenant(request)
    crn = request.headers.get("service-crn", "")
    if _platform(request).config.instance(crn) is None or not crn.startswith("crn:"):
        raise platform_error(403, "You are not authorized to access this service instance.", "forbidden")
    return Caller(tenant, crn)


Authorized = Annotated[Caller, Depends(authorize)]


def _store(request: Request) -> Store:
    return _platform(request).store


def _device(request: Request, name: str) -> Device:
    device = _platform(request).devices.get(name)
    if device is None:
        raise platform_error(404, f"Backend {name} not found.", "backend_not_found")
    return device


def _job(request: Request, job_id: str, caller: Caller) -> Job:
    job = _store(request).job(job_id, caller.tenant, caller.crn)
    if job is None:
        raise platform_error(404, f"Job {job_id} not found.", "job_not_found")
    return job


def _session(request: Request, session_id: str, caller: Caller) -> Session:
    session = _store(request).session(session_id, caller.tenant, caller.crn)
    if session is None:
        raise platform_error(404, f"Session {session_id} not found.", "session_not_found")
    return session


async def _json_body(request: Request) -> tuple[str, dict[str, Any]]:
    body = (await request.body()).decode("utf-8", "replace")
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as ex:
        raise platform_error(400, f"Invalid JSON body: {ex.msg}", "bad_request") from ex
    if not isinstance(payload, dict):
        raise platform_error(400, "Expected a JSON object.", "bad_request")
    return body, payload


# -- backends ---------------------------------------------------------------------------------


@router.get("/backends")
def backends(request: Request, caller: Authorized, include_mocks: str = "false") -> dict[str, Any]:
    store = _store(request)
    listed = _platform(request).devices.listed(include_mocks.lower() == "true")
    return {"devices": [d.summary(store.queue_length(d.name)) for d in listed]}


def _calibrated(request: Request, name: str, calibration_id: str | None) -> Device:
    """The device, if ``calibration_id`` (when given) is its calibration (404 otherwise, like IBM)."""
    device = _device(request, name)
    if calibration_id is not None and calibration_id != device.calibration_id:
        raise platform_error(
            404, f"Calibration {calibration_id} not found for backend {name}.", "calibration_not_found"
        )
    return device


@router.get("/backends/{name}/configuration")
def configuration(name: str, request: Request, caller: Authorized, calibration_id: str | None = None) -> dict[str, Any]:
    return _calibrated(request, name, calibration_id).configuration()


@router.get("/backends/{name}/properties")
def properties(name: str, request: Request, caller: Authorized, calibration_id: str | None = None) -> dict[str, Any]:
    return _calibrated(request, name, calibration_id).properties()


@router.get("/backends/{name}/status")
def status(name: str, request: Request, caller: Authorized) -> dict[str, Any]:
    return _device(request, name).status(_store(request).queue_length(name))


@router.get("/instances/usage")
def usage(request: Request, caller: Authorized) -> dict[str, Any]:
    # Every job's usage counts, deleted ones too, as on the real service; the limit is reported
    # (and what remains of it) but not enforced, so a long-lived emulator never stops working.
    consumed = _store(request).usage_seconds(caller.tenant, caller.crn)
    limit = constants.PLAN_USAGE_LIMIT_SECONDS
    remaining = max(limit - consumed, 0)
    return {
        "instance_id": caller.crn,
        "plan_id": _platform(request).config.instance(caller.crn).plan_id,  # type: ignore[union-attr]
        "usage_consumed_seconds": consumed,
        "usage_limit_seconds": limit,
        "usage_allocation_seconds": limit,
        "usage_remaining_seconds": remaining,
        "usage_limit_reached": remaining == 0,
        "usage_period": {"start_time": iso(_store(request).started), "end_time": None},
    }


# -- jobs -------------------------------------------------------------------------------------


@router.post("/jobs")
async def submit_job(request: Request, caller: Authorized) -> dict[str, Any]:
    body, payload = await _json_body(request)
    program_id = payload.get("program_id")
    if program_id not in PROGRAMS:
        raise platform_error(404, f"Program {program_id} not found.", "program_not_found")
    requested = payload.get("backend")
    device = _platform(request).devices.get(requested) if isinstance(requested, str) else None
    if device is None:
        raise platform_error(400, f"Backend {requested} is not available.", "invalid_backend")
    backend = device.name
    if (calibration_id := payload.get("calibration_id")) is not None:
        _calibrated(request, backend, str(calibration_id))
    session_id = payload.get("session_id")
    if session_id:
        session = _session(request, session_id, caller)
        if not session.accepting_jobs:
            raise platform_error(400, f"Session {session_id} is closed.", "session_closed")
        if session.backend and session.backend != backend:
            raise platform_error(400, f"Session {session_id} runs on {session.backend}.", "invalid_backend")
    tags = payload.get("tags") or []
    job = Job(
        id=new_id(),
        program_id=program_id,
        backend=backend,
        owner=caller.tenant,
        crn=caller.crn,
        body=body,
        params=payload.get("params") or {},
        session_id=session_id,
        tags=[str(t) for t in tags],
        private=bool(payload.get("private")),
        calibration_id=str(calibration_id) if calibration_id is not None else None,
    )
    _store(request).submit(job, device)
    return {"id": job.id, "backend": backend, "session_id": session_id}


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as ex:
        raise platform_error(400, f"Invalid date {value!r}.", "bad_request") from ex
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@router.get("/jobs")
def list_jobs(request: Request, caller: Authorized) -> dict[str, Any]:
    q = request.query_params
    jobs = _store(request).jobs(caller.tenant, caller.crn)
    if (pending := q.get("pending")) is not None:
        want_pending = pending.lower() == "true"
        jobs = [j for j in jobs if (j.status in (QUEUED, RUNNING)) == want_pending]
    if backend := q.get("backend"):
        jobs = [j for j in jobs if j.backend == backend]
    elif q.get("include_mocks", "").lower() != "true":  # jobs on mock devices only when asked for
        devices = _platform(request).devices
        jobs = [j for j in jobs if not ((d := devices.get(j.backend)) is not None and d.is_mock)]
    if program := q.get("program") or q.get("program_id"):
        jobs = [j for j in jobs if j.program_id == program]
    if session_id := q.get("session_id"):
        jobs = [j for j in jobs if j.session_id == session_id]
    if tags := q.getlist("tags"):
        jobs = [j for j in jobs if set(tags) <= set(j.tags)]
    if after := _parse_time(q.get("created_after")):
        jobs = [j for j in jobs if j.created >= after]
    if before := _parse_time(q.get("created_before")):
        jobs = [j for j in jobs if j.created <= before]
    ascending = q.get("sort", "").upper() == "ASC" or q.get("descending", "").lower() == "false"
    jobs.sort(key=lambda j: j.created, reverse=not ascending)
    try:
        offset = max(int(q.get("offset") or 0), 0)
        limit = max(int(q.get("limit") or 200), 0)
    except ValueError as ex:
        raise platform_error(400, "limit and offset must be integers.", "bad_request") from ex
    exclude = q.get("exclude_params", "true").lower() != "false"
    page = jobs[offset : offset + limit]
    return {"jobs": [j.to_json(exclude) for j in page], "count": len(jobs), "offset": offset, "limit": limit}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request, caller: Authorized, exclude_params: str = "false") -> dict[str, Any]:
    return _job(request, job_id, caller).to_json(exclude_params.lower() == "true")


@router.delete("/jobs/{job_id}", status_code=204)
def delete_job(job_id: str, request: Request, caller: Authorized) -> Response:
    """Delete a job and its results; a job not yet final is cancelled first."""
    _store(request).delete(_job(request, job_id, caller))
    return Response(status_code=204)


@router.get("/jobs/{job_id}/results")
def job_results(job_id: str, request: Request, caller: Authorized) -> Response:
    job = _job(request, job_id, caller)
    if job.status == "Completed" and job.result is not None:
        # A private job's results can be read once: the service deletes them after the read.
        result = _store(request).take_result(job) if job.private else job.result
        return Response(result or "", media_type="application/json")
    if job.status == "Failed":
        return PlainTextResponse(job.reason or "Job failed.")
    raise platform_error(404, f"Results of job {job_id} are not available ({job.status}).", "results_not_found")


@router.post("/jobs/{job_id}/cancel", status_code=204)
def cancel_job(job_id: str, request: Request, caller: Authorized) -> Response:
    job = _job(request, job_id, caller)
    if not _store(request).cancel(job):
        raise platform_error(409, f"Job {job_id} is already in a final state ({job.status}).", "job_final")
    return Response(status_code=204)


@router.put("/jobs/{job_id}/tags", status_code=204)
async def update_tags(job_id: str, request: Request, caller: Authorized) -> Response:
    job = _job(request, job_id, caller)
    _, payload = await _json_body(request)
    job.tags = [str(t) for t in payload.get("tags") or []]
    return Response(status_code=204)


@router.get("/jobs/{job_id}/metrics")
def job_metrics(job_id: str, request: Request, caller: Authorized) -> dict[str, Any]:
    job = _job(request, job_id, caller)
    seconds = job.usage_seconds()
    queued = job.status == QUEUED
    estimated_start = job.estimated_start if queued else job.running_at
    estimated_end = (
        estimated_start + dt.timedelta(seconds=job.estimated_seconds) if queued and estimated_start else job.finished_at
    )
    position = _store(request).position(job)
    return {
        "timestamps": {"created": iso(job.created), "running": iso(job.running_at), "finished": iso(job.finished_at)},
        "bss": {"seconds": seconds},
        "usage": {
            "quantum_seconds": seconds,
            "seconds": seconds,
            "qpu_charge_time_seconds": seconds,
            "status": "final" if job.status in FINAL else "pending",
        },
        "qiskit_version": f"qsandbox-emulator/python-{platform.python_version()}",
        "estimated_start_time": iso(estimated_start),
        "estimated_completion_time": iso(estimated_end),
        "position_in_queue": position,
        "position_in_provider": position,
    }


@router.get("/jobs/{job_id}/logs")
def job_logs(job_id: str, request: Request, caller: Authorized) -> PlainTextResponse:
    """What the emulator did differently from the device (available once the job is final)."""
    job = _job(request, job_id, caller)
    if job.status not in FINAL or not job.logs:
        return PlainTextResponse("")
    lines = [f"qsandbox emulator: job {job.id} on {job.backend} ran on a noisy Aer simulator"]
    lines += [f"not simulated: {line}" for line in job.logs]
    return PlainTextResponse("\n".join(lines) + "\n")


@router.get("/jobs/{job_id}/interim_results")
def job_interim_results(job_id: str, request: Request, caller: Authorized) -> PlainTextResponse:
    _job(request, job_id, caller)
    return PlainTextResponse("")


# -- sessions ---------------------------------------------------------------------------------


@router.post("/sessions")
async def create_session(request: Request, caller: Authorized) -> dict[str, Any]:
    _, payload = await _json_body(request)
    mode = payload.get("mode") or "dedicated"
    if mode not in ("dedicated", "batch"):
        raise platform_error(400, f"Invalid session mode {mode!r}.", "bad_request")
    backend = payload.get("backend") or ""
    if backend:
        _device(request, backend)
    session = Session(
        id=new_id(),
        backend=backend,
        owner=caller.tenant,
        crn=caller.crn,
        mode=mode,
        max_ttl=int(payload.get("max_ttl") or 28800),
    )
    _store(request).add_session(session)
    return session.to_json([])


@router.get("/sessions/{session_id}")
def session_details(session_id: str, request: Request, caller: Authorized) -> dict[str, Any]:
    session = _session(request, session_id, caller)
    return session.to_json(_store(request).session_jobs(session))


@router.patch("/sessions/{session_id}", status_code=204)
async def update_session(session_id: str, request: Request, caller: Authorized) -> Response:
    session = _session(request, session_id, caller)
    _, payload = await _json_body(request)
    if payload.get("accepting_jobs") is False:
        _store(request).close_session(session, cancel_jobs=False)
    return Response(status_code=204)


@router.delete("/sessions/{session_id}/close", status_code=204)
def cancel_session(session_id: str, request: Request, caller: Authorized) -> Response:
    _store(request).close_session(_session(request, session_id, caller), cancel_jobs=True)
    return Response(status_code=204)
