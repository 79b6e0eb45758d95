"""Benchmark harness: ``python -m bench`` measures the service against the running stack.

Each measurement is one module of this package, listed in :data:`SECTIONS` in report order.
A section module exposes::

    TITLE: str                                  # the section's heading
    async def run(*, ctx: BenchContext) -> dict # its figures (see bench.context.figure)
    def markdown(result: dict) -> str           # its section of docs/benchmarks.md

and its ``run`` returns ``{"params": {...}, "figures": {key: figure, ...}, ...}`` where every
figure is ``{"label", "unit", "value", "runs", ...}`` (see :func:`bench.context.figure`).
``bench.report`` writes one section per module that ran; a section that does not exist yet is
simply absent from the report (no placeholder numbers).
"""

from __future__ import annotations

#: Implemented sections, in report order, each as ``bench/<name>.py``.
SECTIONS: tuple[str, ...] = (
    "codec", "ingest", "pipeline", "latency", "scale", "replay", "anomaly", "websocket", "bridge", "gather",
)
