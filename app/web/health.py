"""Operations endpoints, without authentication (they show no event data, only the worker's
own state and counters):

* ``GET /health`` — liveness: 200 while the process works, 503 when it crashed or its health
  loop is stuck (restart it). Dependencies do not count here.
* ``GET /ready`` — readiness: 200 when tables are recovered, Kafka and the schema registry are
  reachable and (bridge on) RabbitMQ is connected; else 503 naming the failing checks. Each
  check is ``{"ok", "detail", "error", "checked_at", "age_seconds"}``.
* ``GET /metrics`` — Prometheus text format of :mod:`app.worker.observability`.
"""

from __future__ import annotations

from faust.web import Request, Response, View

from app.web.route import endpoint, page, public
from app.worker import observability
from app.worker.health import liveness, readiness


@page("/health")
class HealthView(View):
    @endpoint(access=public(reason="liveness for orchestrators: the worker's own state only"),
              tags=["operations"], summary="Liveness: 200 while the process works",
              responses={200: "alive", 503: "crashed or health loop stuck"})
    async def get(self, request: Request) -> Response:
        alive, body = liveness()
        return self.json(body, status=200 if alive else 503)


@page("/ready")
class ReadyView(View):
    @endpoint(access=public(reason="readiness for load balancers: which dependencies answer (URLs without "
                                   "passwords)"),
              tags=["operations"], summary="Readiness: tables recovered, Kafka, registry (and RabbitMQ) reachable",
              responses={200: "ready, with each check", 503: "not ready, naming the failing checks"})
    async def get(self, request: Request) -> Response:
        ready, body = readiness()
        return self.json(body, status=200 if ready else 503, headers=None if ready else {"Retry-After": "5"})


@page("/metrics")
class MetricsView(View):
    @endpoint(access=public(reason="Prometheus scraping: counters labelled by topic, agent and reason only; no "
                                   "ids, no events"),
              tags=["operations"], summary="Prometheus metrics (text exposition format)", content_type="text/plain")
    async def get(self, request: Request) -> Response:
        return self.bytes(observability.render(), content_type=observability.CONTENT_TYPE)
