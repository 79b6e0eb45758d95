"""Read-only access to a worker's RocksDB table files (for ``cosmic tables`` offline)."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings

#: Faust's RocksDB store keeps each partition's changelog offset under this key.
FAUST_OFFSET_KEY = b"__faust\0offset__"


def table_partition_dirs(*, settings: Settings, table: str) -> list[Path]:
    """The ``<table>-<partition>.db`` directories of ``table`` in the worker's data dir."""
    base = settings.worker_data_dir / "v1" / "tables"
    return sorted(p for p in base.glob(f"{table}-*.db") if p.name[len(table) + 1 : -3].isdigit())


def count_keys(*, settings: Settings, table: str) -> int | None:
    """Keys stored on disk for ``table`` (None when the worker has no data for it)."""
    import rocksdict

    dirs = table_partition_dirs(settings=settings, table=table)
    if not dirs:
        return None
    total = 0
    for path in dirs:
        db = rocksdict.Rdict(str(path), access_type=rocksdict.AccessType.read_only(), options=rocksdict.Options(raw_mode=True))
        try:
            total += sum(1 for key in db.keys() if key != FAUST_OFFSET_KEY)
        finally:
            db.close()
    return total
