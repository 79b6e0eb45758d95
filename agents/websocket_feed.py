"""Attach the websocket hub (:mod:`app.worker.websocket_hub`) to the app: it starts with the worker
(after table recovery, like every ``app.service``) and serves ``/ws`` (``app/web/ws.py``).

Job owners the hub has not seen on job-lifecycle are asked from this worker's own
``GET /api/jobs/{id}``, which Faust routes to the worker owning the job's partition.
"""

from __future__ import annotations

from typing import Any

from app.worker.main import app, codecs, settings
from app.worker.websocket_hub import WebsocketHub, http_owner_lookup


def _own_base_url() -> str:
    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "", "::") else settings.web_host
    return f"http://{host}:{settings.web_port}"


class WorkerWebsocketHub(WebsocketHub):
    """The hub of this worker, on the app's settings and codecs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, settings=settings, codecs=codecs,
                         owner_lookup=http_owner_lookup(base_url=_own_base_url()), **kwargs)


app.service(WorkerWebsocketHub)
