"""Table declarations (RocksDB through rocksdict; memory store in unit tests)."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T")


def copartitioned_table(*, declare: Callable[..., T], name: str, topic: str, help: str, default: Any = None,
                        **options: Any) -> T:
    """Declare the str-keyed table ``name`` on the service's app with ``declare``
    (:func:`app.worker.table_fencing.fenced_table` or :func:`app.worker.batching.coalescing_table`),
    partitioned like ``topic`` (unprefixed), so a key's row lives with its source events."""
    from app.worker.main import app
    from app.core.topic_specs import spec_by_name

    return declare(app, name, default=default, key_type=str, partitions=spec_by_name(topic).partitions,
                   help=help, **options)
