"""Codec: per-event CPU cost of JSON parsing, validation, Avro encoding and decoding.

No broker is involved; the registry is asked once for the schema ids (under the run's own
topic prefix), after which encoding and decoding are pure CPU in this process.
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

from app.core.timeutil import utc_now
from app.core.validation import event_to_json, parse_events, topic_of
from app.worker.publisher import prepare_record
from bench.context import BenchContext, chunks, event_mix, figure, fmt, make_events, timed

TITLE = "Codec: per-event CPU cost"

#: (key, label) in report order; every one is a figure in µs/event.
STEPS: tuple[tuple[str, str], ...] = (
    ("json_parse_us", "JSON parse (`json.loads` of 500-event arrays)"),
    ("validate_us", "JSON validation (`parse_events` of 500-event arrays)"),
    ("encode_us", "Avro encode (`ConfluentAvroCodec.encode`)"),
    ("prepare_record_us", "Kafka record build incl. encode (`prepare_record`)"),
    ("decode_us", "Avro decode to an event record (`ConfluentAvroCodec.decode`)"),
)


async def run(*, ctx: BenchContext) -> dict[str, Any]:
    codecs = ctx.codecs
    schema_ids = await asyncio.to_thread(codecs.warm_up)  # the only registry requests
    n = ctx.events
    events = make_events(n)
    pairs = [(codecs.for_topic(topic_of(e)), e) for e in events]
    json_items = [event_to_json(e) for e in events]
    batches = list(chunks(json_items, ctx.batch_size))
    bodies = [json.dumps(list(batch)).encode() for batch in batches]
    encoded = [(codec, codec.encode(e)) for codec, e in pairs]
    prefix = ctx.topic_prefix

    def json_parse() -> None:
        for body in bodies:
            json.loads(body)

    def validate() -> None:
        for batch in batches:
            parse_events(data=batch, now=utc_now())

    def encode() -> None:
        for codec, event in pairs:
            codec.encode(event)

    def prepare() -> None:
        for event in events:
            prepare_record(event=event, codecs=codecs, topic_prefix=prefix)

    def decode() -> None:
        for codec, data in encoded:
            codec.decode(data)

    steps = {"json_parse_us": json_parse, "validate_us": validate, "encode_us": encode,
             "prepare_record_us": prepare, "decode_us": decode}
    # one untimed pass of each: caches (schemas, validation tables) filled, code paths warm
    for fn in steps.values():
        fn()
    runs: dict[str, list[float]] = {key: [] for key in steps}
    wall: dict[str, list[float]] = {key: [] for key in steps}
    for rep in range(ctx.codec_repetitions):
        for key, fn in steps.items():
            gc.collect()
            cpu_s, wall_s = timed(fn)
            runs[key].append(cpu_s / n * 1e6)
            wall[key].append(wall_s / n * 1e6)
        ctx.log(f"codec: repetition {rep + 1}/{ctx.codec_repetitions} (CPU µs/event): "
                + ", ".join(f"{k}={v[-1]:.1f}" for k, v in runs.items()))

    labels = dict(STEPS)
    figures = {key: figure(label=labels[key], unit="µs/event", runs=runs[key], digits=2) for key in steps}
    wall_figures = {key: figure(label=labels[key] + " (wall-clock)", unit="µs/event", runs=wall[key], digits=2)
                    for key in steps}
    avro_bytes = sum(len(data) for _, data in encoded) / n
    json_bytes = sum(len(body) for body in bodies) / n
    figures["avro_size"] = figure(label="Avro value size (mean, incl. 5-byte header)", unit="bytes/event",
                                  runs=[avro_bytes], digits=1)
    figures["json_size"] = figure(label="JSON size in a request body (mean)", unit="bytes/event",
                                  runs=[json_bytes], digits=1)
    return {
        "params": {
            "events": n, "repetitions": ctx.codec_repetitions, "batch_size": ctx.batch_size,
            "event_mix": event_mix(events), "schema_ids": schema_ids,
        },
        "figures": figures,
        "wall_clock": wall_figures,
    }


def markdown(result: dict[str, Any]) -> str:
    p, f = result["params"], result["figures"]
    mix = ", ".join(f"{name} {count:,}" for name, count in p["event_mix"].items())
    wall = result.get("wall_clock", {})
    lines = [
        f"CPU time per event of the one Python thread doing the work (`time.thread_time`, so time "
        f"spent waiting for a core is left out), over {p['events']:,} job-lifecycle events "
        f"({mix}); median of {p['repetitions']} repetitions, range in brackets, and the wall-clock "
        "median next to it. No broker involved.",
        "",
        "| step | CPU per event (median) | range | wall-clock per event |",
        "| --- | --- | --- | --- |",
    ]
    for key, _label in STEPS:
        fig = f[key]
        wall_text = fmt(wall[key]["value"], wall[key]["unit"]) if key in wall else "–"
        lines.append(f"| {fig['label']} | {fmt(fig['value'], fig['unit'])} | "
                     f"{fig['min']:.1f}–{fig['max']:.1f} µs | {wall_text} |")
    for key in ("avro_size", "json_size"):
        fig = f[key]
        lines.append(f"| {fig['label']} | {fmt(fig['value'], fig['unit'])} | – | – |")
    http_path = f["json_parse_us"]["value"] + f["validate_us"]["value"] + f["prepare_record_us"]["value"]
    lines += [
        "",
        f"The Python work `POST /api/events` does per event before Kafka (JSON parse + validation "
        f"+ record build) adds up to **{http_path:.1f} µs/event** of CPU, i.e. at most "
        f"**{1e6 / http_path:,.0f} events/s** on one core before any network or broker time. "
        "Validation includes a full fastavro schema check of every event.",
    ]
    return "\n".join(lines)
