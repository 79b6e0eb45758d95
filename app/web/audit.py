"""Audit queries, from the indexes of :mod:`tables.audit_index` (newest items, bounded).

* ``GET /api/audit/resources/{resource_id}``: the resource's audit records, oldest first,
  answered by the worker owning the key (the resource's ``audit-trail`` partition); 404
  when the resource has none.
* ``GET /api/audit/actors/{actor}``: the actor's audit records of every ``audit-trail``
  partition (the union of its ``"p/actor"`` keys), gathered from every worker of the group
  (:mod:`app.web.gather`: each reads the partitions it holds), ordered by time; 404 when none.

Each record names its chain entry (``partition``, ``seq``); ``cosmic audit verify`` checks
the chain. Both need an operator JWT (401 without a valid token, 403 for a plain user: audit
records are table contents naming users and their actions) and answer 503 with
``Retry-After`` while the worker recovers or rebalances.
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from app.core.auth import Principal
from app.web.gather import Gather
from app.web.route import OPERATOR, Owner, endpoint, page
from tables.audit_chain import AUDIT_PARTITIONS
from tables.audit_index import actor_records, audit_by_actor, audit_by_resource

_RESPONSES = {200: "{..., \"count\", \"records\"}", 404: "no audit records"}


@page("/api/audit/resources/{resource_id}")
@endpoint(access=OPERATOR, ready=True, owner=Owner(table=audit_by_resource, key="resource_id"), tags=["audit"],
          summary="A resource's audit records, oldest first", responses=_RESPONSES)
async def get_resource_audit(web: View, request: Request, *, principal: Principal, resource_id: str) -> Response:
    indexed = audit_by_resource.get(resource_id)
    if not indexed or not indexed.get("records"):
        return web.json({"error": "no audit records for this resource", "resource_id": resource_id}, status=404)
    records = indexed["records"]
    return web.json({"resource_id": resource_id, "count": len(records), "records": records})


def merge_actor_records(*, web: View, parts: list[dict[str, Any]], request: Request) -> dict[str, Any] | Response:
    """Every part's records of the actor, by time; 404 when no part has any."""
    actor = parts[0]["actor"]
    records = sorted((r for part in parts for r in part["records"]), key=lambda r: (r["at"], r["partition"], r["seq"]))
    if not records:
        return web.json({"error": "no audit records for this actor", "actor": actor}, status=404)
    return {"actor": actor, "count": len(records), "records": records}


@page("/api/audit/actors/{actor}")
class ActorAuditView(View):
    @endpoint(access=OPERATOR, ready=True, gather=Gather(scope=audit_by_actor, merge=merge_actor_records),
              tags=["audit"], summary="An actor's audit records, by time (gathered from every worker)",
              responses=_RESPONSES)
    async def get(self, request: Request, *, principal: Principal, actor: str,
                  partitions: frozenset[int] | None) -> dict[str, Any]:
        records: list[dict[str, Any]] = []
        for partition in sorted(partitions) if partitions is not None else range(AUDIT_PARTITIONS):
            records.extend(actor_records(partition=partition, actor=actor))
        return {"actor": actor, "records": records}
