"""Windowed publishes through ``RabbitBridge.publish``, the agents' way, on an idle and on
a busy event loop: ``python -m bench.bridge_window [--events N] [--batch N]``; "one" publishes
each event alone (a confirmed ``publish`` per event, as the agents did before 2026-12-07),
"batched" a batch at once (``RabbitBridge.publish_events``, the agents' way now).

A fresh vhost on ``COSMIC_RABBITMQ_URL`` with the project's topology; job-lifecycle events are
published in batches (default 25, what the bridge agent's batch held under the pipeline bench before 2026-12-07),
all of a batch at once with up to 256 confirms outstanding, as :meth:`app.worker.batching.Batch.finish`
runs a batch's deferred publishes. "Busy" adds a task that holds the loop 5 ms out of every
6, as the worker's other agents do while they handle their batches: how many event-loop
turns one batch of publishes needs is what separates the two figures.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid


async def _run(*, events: int, batch: int, window: int = 256) -> dict[str, float]:
    from app.core.validation import event_to_json
    from app.worker.rabbit_bridge import RabbitBridge
    from app.core.settings import Settings
    from bench.bridge import _Management
    from bench.context import make_events

    settings = Settings.from_env()
    management = _Management(settings.rabbitmq_url)
    name = f"cosmic-bench-window-{uuid.uuid4().hex[:12]}"
    bridge = RabbitBridge()
    bridge.url = management.create_vhost(name)
    busy = False

    async def hold_the_loop() -> None:
        while busy:
            began = time.perf_counter()
            while time.perf_counter() - began < 0.005:
                pass
            await asyncio.sleep(0.001)

    results: dict[str, float] = {}
    try:
        await bridge.start()
        await asyncio.wait_for(bridge.ready(), 30)  # it connects in the background
        gate = asyncio.Semaphore(window)

        async def publish(event) -> None:  # noqa: ANN001
            async with gate:
                await bridge.publish(event)

        for label, loaded in (("idle", False), ("busy", True)):
            for path in ("one", "batched"):
                # JSON forms, as the agents pass their copies (decode_json)
                sample = [event_to_json(e) for e in make_events(events)]
                busy = loaded
                holder = asyncio.ensure_future(hold_the_loop()) if loaded else None
                began = time.perf_counter()
                cpu = time.process_time()
                for start in range(0, len(sample), batch):
                    if path == "one":  # a confirmed publish per event, 256 at once (before 2026-12-07)
                        await asyncio.gather(*(publish(e) for e in sample[start:start + batch]))
                    else:  # the agents' way: RabbitBridge.publish_events, one write per window
                        await bridge.publish_events(sample[start:start + batch], window=window)
                key = f"{label}_{path}"
                results[f"{key}_events_per_s"] = round(len(sample) / (time.perf_counter() - began), 1)
                results[f"{key}_cpu_us_per_event"] = round((time.process_time() - cpu) / len(sample) * 1e6, 1)
                busy = False
                if holder is not None:
                    await holder
    finally:
        await bridge.stop()
        management.delete_vhost(name)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge_window", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--window", type=int, default=256, help="confirms outstanding at most (default 256)")
    args = parser.parse_args(argv)
    for key, value in asyncio.run(_run(events=args.events, batch=args.batch, window=args.window)).items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
