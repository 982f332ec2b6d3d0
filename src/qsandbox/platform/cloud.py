"""Global Search, Global Catalog and Resource Controller: how the client finds instances.

``QiskitRuntimeService()`` lists instances through Global Search (skipping items without
``doc.extensions``), reads each plan from Global Catalog, and resolves an instance *name* through
Resource Controller. The configured CRN is offered, and one more instance per extra plan
(``QSANDBOX_PLATFORM_EXTRA_PLANS``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..common import platform_constants as constants
from .config import Instance, PlatformConfig
from .errors import platform_error
from .iam import bearer_claims

search_router = APIRouter()
catalog_router = APIRouter()
controller_router = APIRouter()


def _config(request: Request) -> PlatformConfig:
    config: PlatformConfig = request.app.state.platform.config
    return config


@search_router.post("/v3/resources/search")
def search(request: Request) -> dict[str, Any]:
    bearer_claims(request)
    items = [
        {
            "crn": instance.crn,
            "name": instance.name,
            "service_plan_unique_id": instance.plan_id,
            "tags": [],
            "doc": {
                "extensions": {"quantum_computing": {"instance_type": "emulated"}},
                "resource_plan_id": instance.plan_id,
                "state": "active",
            },
        }
        for instance in _config(request).instances
    ]
    return {"items": items, "limit": 100}


@catalog_router.get("/api/v1/{entry_id}")
def catalog_entry(entry_id: str, request: Request) -> dict[str, Any]:
    bearer_claims(request)
    plan = next((i for i in _config(request).instances if i.plan_id == entry_id), None)
    if plan is None:
        raise platform_error(404, "Catalog entry not found.", "not_found")
    return {
        "id": plan.plan_id,
        "name": plan.plan_name.lower(),
        "kind": "plan",
        "active": True,
        "overview_ui": {"en": {"display_name": plan.plan_name, "description": "qsandbox"}},
        "metadata": {"pricing": {"type": plan.pricing_type}},
    }


def _instance(instance: Instance) -> dict[str, Any]:
    """Resource Controller ``ResourceInstance`` body of one instance."""
    return {
        "id": instance.crn,
        "guid": instance.guid,
        "url": f"/v2/resource_instances/{instance.guid}",
        "crn": instance.crn,
        "name": instance.name,
        "account_id": constants.ACCOUNT_ID,
        "resource_plan_id": instance.plan_id,
        "region_id": instance.crn.split(":")[5],
        "type": "service_instance",
        "state": "active",
        "allow_cleanup": False,
        "locked": False,
    }


@controller_router.get("/v2/resource_instances")
def resource_instances(request: Request, name: str | None = None) -> dict[str, Any]:
    bearer_claims(request)
    resources = [_instance(i) for i in _config(request).instances if name in (None, i.name)]
    return {"rows_count": len(resources), "next_url": None, "resources": resources}


@controller_router.get("/v2/resource_instances/{instance_id:path}")
def resource_instance(instance_id: str, request: Request) -> dict[str, Any]:
    """One instance, by CRN or GUID (``ResourceControllerV2.get_resource_instance``)."""
    bearer_claims(request)
    instance = _config(request).instance(instance_id)
    if instance is None:
        raise platform_error(404, f"Instance {instance_id} not found.", "not_found")
    return _instance(instance)
