"""Job queries. ``GET /api/jobs/{job_id}`` is answered by the worker that owns the key."""

from __future__ import annotations

from faust.web import Request, Response, View

from app.main import app
from app.web.routing import owner_routed
from tables.job_state import job_state


@app.page("/api/jobs/{job_id}")
@owner_routed(table=job_state, match_info="job_id")
async def get_job(web: View, request: Request, job_id: str) -> Response:
    state = job_state.get(job_id)
    if state is None:
        return web.json({"error": "job not found", "job_id": job_id}, status=404)
    return web.json(state)
