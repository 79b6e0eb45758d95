"""``python -m bench [--quick] [--events N] [--output-dir DIR] [--only codec,ingest]``.

Runs the sections of :data:`bench.SECTIONS` against the stack named by the ``COSMIC_*``
settings (the local stack by default) with a fresh uuid topic prefix and app id, then writes
``benchmarks.md`` and ``benchmarks.json`` (default: ``docs/``). Progress goes to stderr. If a
section fails, nothing is written and the exit status is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from app.core.errors import CosmicError
from app.core.settings import PROJECT_ROOT, Settings
from bench import SECTIONS, environment, report
from bench.context import BenchContext, BenchError

FULL = {"events": 20_000, "codec_repetitions": 5, "ingest_repetitions": 3}
QUICK = {"events": 2_000, "codec_repetitions": 3, "ingest_repetitions": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true",
                        help=f"small sizes for a CI smoke run ({QUICK['events']:,} events; under a minute)")
    parser.add_argument("--events", type=int, metavar="N",
                        help=f"events per measurement (default {FULL['events']:,}, --quick {QUICK['events']:,})")
    parser.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "docs", metavar="DIR",
                        help="where benchmarks.md and benchmarks.json go (default: the project's docs/)")
    parser.add_argument("--only", metavar="SECTIONS", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})")
    parser.add_argument("--merge", action="store_true",
                        help="keep the sections of the existing benchmarks.json that this run does not "
                             "measure (each marked with the run it came from)")
    parser.add_argument("--keep-topics", action="store_true",
                        help="keep the run's topics on the broker and its workers' directories (default: delete both at the end)")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in SECTIONS]
    if unknown or not only:
        parser.error(f"--only takes sections among {', '.join(SECTIONS)}; got {args.only!r}")
    args.sections = [name for name in SECTIONS if name in only]  # report order, no duplicates
    if args.events is not None and args.events < 100:
        parser.error("--events must be at least 100")
    return args


async def _delete_run_topics(settings: Settings, *, log) -> None:  # noqa: ANN001
    """Delete the topics this run created: its prefix's and its app id's (Faust changelogs)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=30000)
    try:
        await admin.start()
        mine = [t for t in await admin.list_topics()
                if t.startswith(settings.topic_prefix) or t.startswith(settings.app_id + "-")]
        if mine:
            await admin.delete_topics(mine)
            log(f"bench: deleted {len(mine)} topics of this run")
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the results
        log(f"bench: could not delete this run's topics ({exc!r}); they start with {settings.topic_prefix!r}")
    finally:
        await admin.close()


async def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    base = Settings.from_env()
    run_id = uuid.uuid4().hex[:12]
    settings = dataclasses.replace(
        base, topic_prefix=f"{base.topic_prefix}bench-{run_id}-", app_id=f"cosmic-bench-{run_id}"
    )
    sizes = dict(QUICK if args.quick else FULL)
    if args.events is not None:
        sizes["events"] = args.events
    workdir = Path(tempfile.mkdtemp(prefix=f"cosmic-bench-{run_id}-"))
    ctx = BenchContext(settings=settings, run_id=run_id, quick=args.quick, batch_size=500,
                       http_concurrency=4, workdir=workdir, **sizes)
    cpu_before = environment.cpu_times()
    meta: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.orig_argv),
        "argv": sys.orig_argv,
        "cwd": str(Path.cwd()),
        "revision": environment.revision(),
        "run_id": run_id,
        "topic_prefix": settings.topic_prefix,
        "options": {"quick": args.quick, "sections": args.sections, **sizes, "batch_size": ctx.batch_size,
                    "http_concurrency": ctx.http_concurrency},
        "machine": environment.machine(),
    }
    # the stack's status takes a few seconds: asked in the background while sections run
    versions = asyncio.ensure_future(asyncio.to_thread(environment.versions, base))
    ctx.log(f"bench: run {run_id}, sections {', '.join(args.sections)}, {sizes['events']:,} events"
            f"{' (quick)' if args.quick else ''}; Kafka {settings.kafka_bootstrap}")
    done: list[tuple[str, ModuleType, dict[str, Any]]] = []
    try:
        for name in args.sections:
            module = importlib.import_module(f"bench.{name}")
            section_start, section_cpu = time.monotonic(), environment.cpu_times()
            result = await module.run(ctx=ctx)
            result["elapsed_s"] = round(time.monotonic() - section_start, 1)
            result["cpu_during_section"] = environment.cpu_share(section_cpu, environment.cpu_times())
            ctx.log(f"bench: {name} done in {result['elapsed_s']} s")
            done.append((name, module, result))
    except (BenchError, CosmicError) as exc:
        ctx.log(f"bench: FAILED: {exc}")
        return 1
    finally:
        if not args.keep_topics:
            await _delete_run_topics(settings, log=ctx.log)
        if args.keep_topics:
            ctx.log(f"bench: kept the workers' directories (logs, data) in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        meta["versions"] = await versions
    meta["duration_s"] = round(time.monotonic() - started, 1)
    meta["machine"]["load_average_1m_at_end"] = environment.load_average()
    meta["machine"]["cpu_during_run"] = environment.cpu_share(cpu_before, environment.cpu_times())
    if args.merge:
        done = report.merged(output_dir=args.output_dir, sections=done)
    md_path, json_path = report.write(output_dir=args.output_dir, meta=meta, sections=done)
    ctx.log(f"bench: wrote {md_path} and {json_path} ({meta['duration_s']} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
