"""Global Search, Global Catalog and Resource Controller: how the client finds instances.

``QiskitRuntimeService()`` lists instances through Global Search (skipping items without
``doc.extensions``), reads each plan from Global Catalog, and resolves an instance *name* through
Resource Controller. One instance is offered: the configured CRN.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..common import platform_constants as constants
from .errors import platform_error
from .iam import bearer_claims

search_router = APIRouter()
catalog_router = APIRouter()
controller_router = APIRouter()


def _crn(request: Request) -> str:
    crn: str = request.app.state.platform.config.instance_crn
    return crn


def _instance_guid(crn: str) -> str:
    return crn.split(":")[7]


@search_router.post("/v3/resources/search")
def search(request: Request) -> dict[str, Any]:
    bearer_claims(request)
    crn = _crn(request)
    item = {
        "crn": crn,
        "name": constants.INSTANCE_NAME,
        "service_plan_unique_id": constants.PLAN_ID,
        "tags": [],
        "doc": {
            "extensions": {"quantum_computing": {"instance_type": "emulated"}},
            "resource_plan_id": constants.PLAN_ID,
            "state": "active",
        },
    }
    return {"items": [item], "limit": 100}


@catalog_router.get("/api/v1/{entry_id}")
def catalog_entry(entry_id: str, request: Request) -> dict[str, Any]:
    bearer_claims(request)
    if entry_id != constants.PLAN_ID:
        raise platform_error(404, "Catalog entry not found.", "not_found")
    return {
        "id": constants.PLAN_ID,
        "name": constants.PLAN_NAME.lower(),
        "kind": "plan",
        "active": True,
        "overview_ui": {"en": {"display_name": constants.PLAN_NAME, "description": "qsandbox"}},
        "metadata": {"pricing": {"type": constants.PLAN_PRICING_TYPE}},
    }


def _instance(crn: str) -> dict[str, Any]:
    """Resource Controller ``ResourceInstance`` body of the one instance."""
    guid = _instance_guid(crn)
    return {
        "id": crn,
        "guid": guid,
        "url": f"/v2/resource_instances/{guid}",
        "crn": crn,
        "name": constants.INSTANCE_NAME,
        "account_id": constants.ACCOUNT_ID,
        "resource_plan_id": constants.PLAN_ID,
        "region_id": crn.split(":")[5],
        "type": "service_instance",
        "state": "active",
        "allow_cleanup": False,
        "locked": False,
    }


@controller_router.get("/v2/resource_instances")
def resource_instances(request: Request, name: str | None = None) -> dict[str, Any]:
    bearer_claims(request)
    crn = _crn(request)
    resources = [_instance(crn)] if name in (None, constants.INSTANCE_NAME) else []
    return {"rows_count": len(resources), "next_url": None, "resources": resources}


@controller_router.get("/v2/resource_instances/{instance_id:path}")
def resource_instance(instance_id: str, request: Request) -> dict[str, Any]:
    """One instance, by CRN or GUID (``ResourceControllerV2.get_resource_instance``)."""
    bearer_claims(request)
    crn = _crn(request)
    if instance_id not in (crn, _instance_guid(crn)):
        raise platform_error(404, f"Instance {instance_id} not found.", "not_found")
    return _instance(crn)
