"""Operations endpoints, without authentication (they show no event data, only the worker's
own state and counters):

* ``GET /health`` — liveness: 200 while the process works, 503 when it crashed or its health
  loop is stuck (restart it). Dependencies do not count here.
* ``GET /ready`` — readiness: 200 when tables are recovered, Kafka and the schema registry are
  reachable and (bridge on) RabbitMQ is connected; else 503 naming the failing checks. Each
  check is ``{"ok", "detail", "error", "checked_at", "age_seconds"}``.
* ``GET /metrics`` — Prometheus text format of :mod:`app.observability`.
"""

from __future__ import annotations

from faust.web import Request, Response, View

from app import observability
from app.health import liveness, readiness
from app.main import app


@app.page("/health")
class HealthView(View):
    async def get(self, request: Request) -> Response:
        alive, body = liveness()
        return self.json(body, status=200 if alive else 503)


@app.page("/ready")
class ReadyView(View):
    async def get(self, request: Request) -> Response:
        ready, body = readiness()
        return self.json(body, status=200 if ready else 503, headers=None if ready else {"Retry-After": "5"})


@app.page("/metrics")
class MetricsView(View):
    async def get(self, request: Request) -> Response:
        return self.bytes(observability.render(), content_type=observability.CONTENT_TYPE)
