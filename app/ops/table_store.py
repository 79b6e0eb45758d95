"""Read-only access to a worker's RocksDB table files (``cosmic tables|table`` offline).

Opening read-only never takes RocksDB's write lock, so it also works beside a running
worker (it then sees the files as last flushed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from app.core.errors import CosmicError
from app.core.settings import Settings

#: Faust's RocksDB store keeps each partition's changelog offset under this key.
FAUST_OFFSET_KEY = b"__faust\0offset__"


class TableNotFound(CosmicError):
    """No files for that table in the data directory."""


def tables_dir(*, settings: Settings) -> Path:
    return settings.worker_data_dir / "v1" / "tables"


def table_names(*, settings: Settings) -> list[str]:
    names = set()
    for path in tables_dir(settings=settings).glob("*-*.db"):
        name, _, part = path.name[:-3].rpartition("-")
        if part.isdigit():
            names.add(name)
    return sorted(names)


def table_partition_dirs(*, settings: Settings, table: str) -> list[Path]:
    """The ``<table>-<partition>.db`` directories of ``table`` in the worker's data dir."""
    base = tables_dir(settings=settings)
    return sorted(p for p in base.glob(f"{table}-*.db") if p.name[len(table) + 1 : -3].isdigit())


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return raw.decode("utf-8", errors="replace")


def iter_items(*, settings: Settings, table: str) -> Iterator[tuple[Any, Any]]:
    """(key, value) of every entry, keys and values decoded from JSON."""
    import rocksdict

    dirs = table_partition_dirs(settings=settings, table=table)
    if not dirs:
        raise TableNotFound(f"no table {table!r} under {tables_dir(settings=settings)}")
    for path in dirs:
        db = rocksdict.Rdict(
            str(path), access_type=rocksdict.AccessType.read_only(), options=rocksdict.Options(raw_mode=True)
        )
        try:
            for key, value in db.items():
                if key != FAUST_OFFSET_KEY:
                    yield _decode(key), _decode(value)
        finally:
            db.close()


def count_keys(*, settings: Settings, table: str) -> int | None:
    """Keys stored on disk for ``table`` (None when the worker has no data for it)."""
    try:
        return sum(1 for _ in iter_items(settings=settings, table=table))
    except TableNotFound:
        return None


def key_text(key: Any) -> str:
    """A key as users type it: strings as they are, windowed keys as JSON."""
    return key if isinstance(key, str) else json.dumps(key)


def get(*, settings: Settings, table: str, key: str) -> Any:
    for stored_key, value in iter_items(settings=settings, table=table):
        if key_text(stored_key) == key:
            return value
    raise KeyError(key)


def dump(*, settings: Settings, table: str, prefix: str = "", limit: int | None = None) -> Iterator[dict]:
    n = 0
    for key, value in iter_items(settings=settings, table=table):
        if key_text(key).startswith(prefix):
            yield {"key": key, "value": value}
            n += 1
            if limit is not None and n >= limit:
                return
