"""``python -m app.ops.registry [--host H] [--port P] [--bootstrap B] [--topic T]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from urllib.parse import urlsplit

from app.core.errors import CosmicError
from app.core.settings import Settings
from app.ops.registry.server import serve
from app.ops.registry.store import KafkaLog, SchemaStore


def parse_args(*, argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    url = urlsplit(settings.schema_registry_url)
    parser = argparse.ArgumentParser(prog="python -m app.ops.registry", description=__doc__)
    parser.add_argument("--host", default=url.hostname or "127.0.0.1")
    parser.add_argument("--port", type=int, default=url.port or 8081)
    parser.add_argument("--bootstrap", default=settings.kafka_bootstrap)
    parser.add_argument("--topic", default="_schemas")
    parser.add_argument("--replication-factor", type=int, default=settings.replication_factor)
    parser.add_argument("--log-level", default=settings.log_level)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except CosmicError as exc:
        print(f"schema registry: {exc}", file=sys.stderr)
        return 2
    args = parse_args(argv=argv, settings=settings)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    store = SchemaStore(
        log=KafkaLog(bootstrap=args.bootstrap, topic=args.topic, replication_factor=args.replication_factor)
    )
    try:
        asyncio.run(serve(store=store, host=args.host, port=args.port))
    except CosmicError as exc:
        logging.getLogger("app.ops.registry").error("schema registry failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
