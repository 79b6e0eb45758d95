"""The audit hash chain: hashing one entry, and verifying a partition's chain (pure; no I/O).

Every record on ``audit-trail`` partition *p* becomes chain entry *n* of partition *p*
(``n`` = 0, 1, 2 … with no gaps), named by :func:`entry_key` ``"p:nnnnnnnnnnnn"`` and stored
in a *block* of :data:`BLOCK_SIZE` consecutive entries: the ``audit_chain`` table's value under
:func:`block_key` (the key of the block's first entry) is ``{"offset": source offset of its
newest entry, "entries": [entry, …]}``, so a batch that chains many records of a partition
writes a few table values (and changelog records), not one per record.
:func:`entries_of_blocks` turns the table back into entry key → entry. Each entry is::

    hash(n) = sha256( prev_hash + "\\n" + canonical_json(record) + "\\n" + str(n) )

with ``prev_hash`` = ``hash(n - 1)``, or :data:`GENESIS_HASH` (64 zeros) for entry 0, and
``record`` the audit event in its JSON form (:func:`app.core.validation.event_to_json`).
Canonical JSON is ``json.dumps`` with sorted keys, no whitespace and UTF-8 kept as is, so the
hash of a record that went through any JSON round trip (the table's changelog) is the same.

Changing a stored record (or its hash) breaks the chain at that entry; removing an entry
leaves a gap (a *missing* seq); moving entries around breaks the seq or the hash. What a
chain without an external anchor cannot show is the loss of its newest entries or a
complete rewrite from some entry onward: compare :attr:`PartitionReport.head_hash` with a
copy kept elsewhere for that.

:func:`verify_entries` checks every partition and reports, per partition, the entries that
verified and the first break (:class:`ChainBreak`); ``cosmic audit verify``
(:mod:`app.ops.cli_audit`) feeds it the ``audit_chain`` changelog topic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

#: ``prev_hash`` of entry 0.
GENESIS_HASH = "0" * 64
#: Table (and changelog topic) holding the chain entries.
CHAIN_TABLE = "audit_chain"
#: Entries per table value. A batch chaining *k* records of a partition writes about
#: k / BLOCK_SIZE + 1 values; a batch chaining one rewrites its block (BLOCK_SIZE / 2 entries
#: on average), so larger blocks trade bytes at low rates for records at high ones.
BLOCK_SIZE = 16
ENTRY_FIELDS = ("seq", "event_id", "record", "prev_hash", "hash", "source_offset")


def canonical_json(record: Mapping[str, Any]) -> str:
    """The one text of ``record`` that is hashed: sorted keys, compact, UTF-8 as is."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chain_hash(prev_hash: str, record: Mapping[str, Any], seq: int) -> str:
    """The hash of entry ``seq`` holding ``record``, chained to ``prev_hash`` (hex sha256)."""
    text = f"{prev_hash}\n{canonical_json(record)}\n{seq}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def entry_key(partition: int, seq: int) -> str:
    """The ``audit_chain`` key of entry ``seq`` of ``partition``: sorts in seq order."""
    return f"{partition}:{seq:012d}"


def parse_entry_key(key: str) -> tuple[int, int] | None:
    """``"p:nnnnnnnnnnnn"`` → (p, n); None for anything else."""
    head, sep, tail = key.partition(":")
    if not sep or not head.isdigit() or not tail.isdigit():
        return None
    return int(head), int(tail)


def block_key(partition: int, seq: int) -> str:
    """The ``audit_chain`` key of the block holding entry ``seq`` of ``partition``."""
    return entry_key(partition, seq - seq % BLOCK_SIZE)


def entries_of_blocks(table: Mapping[str, Any]) -> dict[str, Any]:
    """The chain entries of an ``audit_chain`` table (block key → block), by entry key.

    An entry is filed under the seq its position in the block gives (``verify_entries`` then
    checks that it names that seq). A value under a chain key that is not a block (not a
    list of 1 to BLOCK_SIZE entries, or not under a block's first seq) is kept under its own
    key, so verification reports it as unreadable there; keys that are not chain keys are
    kept as they are (stray keys).
    """
    entries: dict[str, Any] = {}
    for key, value in table.items():
        parsed = parse_entry_key(key)
        blocked = value.get("entries") if isinstance(value, dict) else None
        if parsed is None or not isinstance(blocked, list) or not 0 < len(blocked) <= BLOCK_SIZE \
                or parsed[1] % BLOCK_SIZE:
            entries[key] = value
            continue
        partition, first = parsed
        for index, entry in enumerate(blocked):
            entries[entry_key(partition, first + index)] = entry
    return entries


def changelog_topic_name(app_id: str, table: str = CHAIN_TABLE) -> str:
    """Faust's changelog topic of ``table``: ``<app_id>-<table>-changelog`` (no topic prefix)."""
    return f"{app_id}-{table}-changelog"


def make_entry(*, seq: int, event_id: str, record: Mapping[str, Any], prev_hash: str,
               source_offset: int) -> dict[str, Any]:
    """The stored value of chain entry ``seq``."""
    return {
        "seq": seq,
        "event_id": event_id,
        "record": dict(record),
        "prev_hash": prev_hash,
        "hash": chain_hash(prev_hash, record, seq),
        "source_offset": source_offset,
    }


@dataclass(frozen=True, kw_only=True)
class ChainBreak:
    """Where and how a partition's chain stops verifying."""

    partition: int
    seq: int
    #: ``missing`` (no entry for this seq), ``unreadable`` (not an entry), ``seq-mismatch``
    #: (the entry stored under this seq names another), ``prev-hash-mismatch`` (not chained to
    #: the previous entry), ``hash-mismatch`` (record or hash changed), ``event-id-mismatch``.
    kind: str
    event_id: str | None
    expected: str
    found: str

    def message(self) -> str:
        what = {
            "missing": "entry missing",
            "unreadable": "entry unreadable",
            "seq-mismatch": "entry stored under the wrong seq",
            "prev-hash-mismatch": "prev_hash is not the previous entry's hash",
            "hash-mismatch": "hash does not match the entry's contents",
            "event-id-mismatch": "event_id differs from the record's",
        }.get(self.kind, self.kind)
        event = f" (event {self.event_id})" if self.event_id else ""
        return (f"partition {self.partition} seq {self.seq}{event}: {what}: "
                f"expected {self.expected}, found {self.found}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message()}


@dataclass(frozen=True, kw_only=True)
class PartitionReport:
    partition: int
    #: Entries stored for the partition (after the changelog's last-value-wins).
    entries: int
    #: Entries verified from seq 0 up to the first break (all of them when intact).
    verified: int
    head_seq: int  # -1 for an empty chain
    head_hash: str
    first_break: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.first_break is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition, "ok": self.ok, "entries": self.entries, "verified": self.verified,
            "head_seq": self.head_seq, "head_hash": self.head_hash,
            "first_break": self.first_break.to_dict() if self.first_break else None,
        }


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    partitions: tuple[PartitionReport, ...]
    #: Keys that are not chain-entry keys (``"p:nnnnnnnnnnnn"``): not part of any chain.
    stray_keys: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.partitions) and not self.stray_keys

    @property
    def total(self) -> int:
        return sum(p.entries for p in self.partitions)

    @property
    def breaks(self) -> list[ChainBreak]:
        return [p.first_break for p in self.partitions if p.first_break is not None]

    @property
    def first_break(self) -> ChainBreak | None:
        """The break of the lowest-numbered broken partition."""
        breaks = self.breaks
        return breaks[0] if breaks else None

    def to_dict(self) -> dict[str, Any]:
        first = self.first_break
        return {
            "ok": self.ok,
            "total": self.total,
            "partitions": [p.to_dict() for p in self.partitions],
            "first_break": first.to_dict() if first else None,
            "breaks": [b.to_dict() for b in self.breaks],
            "stray_keys": list(self.stray_keys),
        }


def verify_partition(partition: int, entries: Mapping[int, Any]) -> PartitionReport:
    """Verify one partition's chain; ``entries`` maps the seq of each key to its stored value.

    The chain must run 0, 1, 2 … without gaps; each value must be a chain entry naming its
    own seq, chained to the previous entry's hash, with a hash that matches its contents.
    """
    expected_seq = 0
    prev_hash = GENESIS_HASH
    broken: ChainBreak | None = None
    for seq in sorted(entries):
        value = entries[seq]
        event_id = value.get("event_id") if isinstance(value, dict) else None
        event_id = event_id if isinstance(event_id, str) else None

        def stop(kind: str, expected: object, found: object, *, at: int = seq,
                 eid: str | None = event_id) -> ChainBreak:
            return ChainBreak(partition=partition, seq=at, kind=kind, event_id=eid,
                              expected=str(expected), found=str(found))

        if seq != expected_seq:
            broken = stop("missing", f"entry {entry_key(partition, expected_seq)}",
                          f"next entry is seq {seq}", at=expected_seq, eid=None)
            break
        if not isinstance(value, dict) or any(f not in value for f in ENTRY_FIELDS) \
                or not isinstance(value.get("record"), dict):
            broken = stop("unreadable", f"an object with {', '.join(ENTRY_FIELDS)}", repr(value)[:200])
            break
        if value["seq"] != seq:
            broken = stop("seq-mismatch", f"seq {seq}", f"seq {value['seq']}")
            break
        if value["prev_hash"] != prev_hash:
            broken = stop("prev-hash-mismatch", prev_hash, value["prev_hash"])
            break
        try:
            recomputed = chain_hash(value["prev_hash"], value["record"], seq)
        except (TypeError, ValueError) as exc:
            broken = stop("unreadable", "a JSON record", f"{type(exc).__name__}: {exc}")
            break
        if value["hash"] != recomputed:
            broken = stop("hash-mismatch", recomputed, value["hash"])
            break
        if value["event_id"] != value["record"].get("event_id"):
            broken = stop("event-id-mismatch", value["record"].get("event_id"), value["event_id"])
            break
        prev_hash = value["hash"]
        expected_seq += 1
    return PartitionReport(
        partition=partition, entries=len(entries), verified=expected_seq, head_seq=expected_seq - 1,
        head_hash=prev_hash, first_break=broken,
    )


def verify_entries(entries: Mapping[str, Any], *, partitions: Iterable[int] = ()) -> VerifyReport:
    """Verify every partition of ``entries`` (table key → stored value).

    ``partitions`` lists partitions to report even when they hold no entry (an empty chain
    is intact). Keys that are not entry keys are reported as ``stray_keys`` (not ok).
    """
    by_partition: dict[int, dict[int, Any]] = {p: {} for p in partitions}
    stray: list[str] = []
    for key, value in entries.items():
        parsed = parse_entry_key(key)
        if parsed is None:
            stray.append(key)
            continue
        partition, seq = parsed
        by_partition.setdefault(partition, {})[seq] = value
    reports = tuple(verify_partition(p, by_partition[p]) for p in sorted(by_partition))
    return VerifyReport(partitions=reports, stray_keys=tuple(sorted(stray)))


def decode_changelog_key(raw: bytes | None) -> str | None:
    """A Faust changelog key (raw UTF-8 for ``key_type=str``; JSON-quoted tolerated) → str."""
    if raw is None:
        return None
    text = raw.decode("utf-8", errors="replace")
    if text.startswith('"') and text.endswith('"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        return decoded if isinstance(decoded, str) else text
    return text


def decode_changelog_value(raw: bytes) -> Any:
    """A changelog value (JSON) → the stored entry, or the undecodable text as a str."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return raw.decode("utf-8", errors="replace")


def fold_changelog(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, Any]:
    """(key, value) changelog records in log order → the table: last value wins, None deletes."""
    table: dict[str, Any] = {}
    for raw_key, raw_value in records:
        key = decode_changelog_key(raw_key)
        if key is None:
            continue
        if raw_value is None:
            table.pop(key, None)
        else:
            table[key] = decode_changelog_value(raw_value)
    return table
