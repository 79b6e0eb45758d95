"""The audit hash chain, pure: hashing, and finding the first break of a tampered chain."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from app.core.audit_chain import (
    BLOCK_SIZE,
    GENESIS_HASH,
    block_key,
    canonical_json,
    chain_hash,
    changelog_topic_name,
    entries_of_blocks,
    entry_key,
    fold_changelog,
    make_entry,
    parse_entry_key,
    verify_entries,
    verify_partition,
)


def _record(i: int, resource: str = "job-1") -> dict:
    return {
        "event_id": f"00000000-0000-4000-8000-{i:012d}", "event_type": "AuditRecord",
        "timestamp": f"2024-05-01T12:00:{i % 60:02d}.000Z", "correlation_id": "c-1", "user_id": "alice",
        "schema_version": 1, "action": "job.transition", "actor": "alice", "resource_type": "job",
        "resource_id": resource, "outcome": "SUCCESS", "before": None, "after": '{"status": "QUEUED"}',
        "source_event_id": None,
    }


def _chain(n: int, *, partition: int = 0) -> dict[str, dict]:
    entries: dict[str, dict] = {}
    prev = GENESIS_HASH
    for seq in range(n):
        record = _record(seq)
        entry = make_entry(seq=seq, event_id=record["event_id"], record=record, prev_hash=prev, source_offset=seq * 3)
        entries[entry_key(partition, seq)] = entry
        prev = entry["hash"]
    return entries


def _blocks(entries: dict[str, dict]) -> dict[str, dict]:
    """``entries`` (entry key → entry) as the ``audit_chain`` table stores them: in blocks."""
    blocks: dict[str, dict] = {}
    for key in sorted(entries):
        partition, seq = parse_entry_key(key)
        block = blocks.setdefault(block_key(partition, seq), {"offset": -1, "entries": []})
        block["entries"].append(entries[key])
        block["offset"] = entries[key]["source_offset"]
    return blocks


def _by_seq(entries: dict[str, dict]) -> dict[int, dict]:
    return {parse_entry_key(k)[1]: v for k, v in entries.items()}


def test_the_hash_is_sha256_of_prev_record_and_seq():
    record = _record(7)
    text = GENESIS_HASH + "\n" + json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n" + "0"
    assert chain_hash(GENESIS_HASH, record, 0) == hashlib.sha256(text.encode()).hexdigest()
    # key order and a JSON round trip do not change it; the seq and the previous hash do
    shuffled = dict(reversed(list(record.items())))
    assert chain_hash(GENESIS_HASH, shuffled, 0) == chain_hash(GENESIS_HASH, json.loads(json.dumps(record)), 0)
    assert chain_hash(GENESIS_HASH, record, 1) != chain_hash(GENESIS_HASH, record, 0)
    assert chain_hash("f" * 64, record, 0) != chain_hash(GENESIS_HASH, record, 0)
    assert canonical_json({"b": "é", "a": 1}) == '{"a":1,"b":"é"}'


def test_keys_sort_in_seq_order_and_name_the_changelog():
    assert entry_key(3, 17) == "3:000000000017"
    assert parse_entry_key("3:000000000017") == (3, 17)
    assert parse_entry_key("3/alice") is None and parse_entry_key("x:1") is None
    assert sorted(entry_key(0, s) for s in (10, 9, 100)) == [entry_key(0, 9), entry_key(0, 10), entry_key(0, 100)]
    assert changelog_topic_name("cosmic-horizons") == "cosmic-horizons-audit_chain-changelog"


def test_an_intact_chain_verifies_with_counts_per_partition():
    entries = {**_chain(5, partition=0), **_chain(3, partition=2)}
    report = verify_entries(entries, partitions=range(4))
    assert report.ok and report.total == 8 and report.first_break is None
    assert [(p.partition, p.entries, p.verified, p.head_seq) for p in report.partitions] == [
        (0, 5, 5, 4), (1, 0, 0, -1), (2, 3, 3, 2), (3, 0, 0, -1)
    ]
    assert report.partitions[0].head_hash == entries[entry_key(0, 4)]["hash"]
    assert report.partitions[1].head_hash == GENESIS_HASH
    assert report.to_dict()["ok"] is True


def test_a_tampered_record_breaks_at_its_seq():
    entries = _chain(10)
    entries[entry_key(0, 6)]["record"]["actor"] = "mallory"
    report = verify_partition(0, _by_seq(entries))
    assert not report.ok and report.verified == 6
    brk = report.first_break
    assert (brk.partition, brk.seq, brk.kind) == (0, 6, "hash-mismatch")
    assert brk.event_id == _record(6)["event_id"]
    assert brk.found == entries[entry_key(0, 6)]["hash"] and brk.expected != brk.found
    assert "partition 0 seq 6" in brk.message()


def test_a_rehashed_tampered_record_breaks_at_the_next_link():
    entries = _chain(10)
    tampered = entries[entry_key(0, 4)]
    tampered["record"]["outcome"] = "DENIED"
    tampered["hash"] = chain_hash(tampered["prev_hash"], tampered["record"], 4)
    brk = verify_partition(0, _by_seq(entries)).first_break
    assert (brk.seq, brk.kind) == (5, "prev-hash-mismatch")
    assert brk.expected == tampered["hash"] and brk.found == entries[entry_key(0, 5)]["prev_hash"]


def test_a_deleted_entry_is_a_missing_seq():
    entries = _chain(8)
    del entries[entry_key(0, 3)]
    brk = verify_partition(0, _by_seq(entries)).first_break
    assert (brk.seq, brk.kind, brk.event_id) == (3, "missing", None)
    assert "seq 4" in brk.found
    # a chain must start at 0
    entries = _chain(3)
    del entries[entry_key(0, 0)]
    assert verify_partition(0, _by_seq(entries)).first_break.seq == 0


def test_reordered_entries_break():
    # whole values swapped between two keys: the entry under seq 2 names seq 3
    entries = _chain(6)
    a, b = entry_key(0, 2), entry_key(0, 3)
    entries[a], entries[b] = entries[b], entries[a]
    brk = verify_partition(0, _by_seq(entries)).first_break
    assert (brk.seq, brk.kind) == (2, "seq-mismatch")
    # only the records (and ids) swapped: the hash of seq 2 no longer matches
    entries = _chain(6)
    for field in ("record", "event_id"):
        entries[a][field], entries[b][field] = entries[b][field], entries[a][field]
    brk = verify_partition(0, _by_seq(entries)).first_break
    assert (brk.seq, brk.kind) == (2, "hash-mismatch")


def test_other_breaks_are_named():
    entries = _chain(4)
    entries[entry_key(0, 1)]["event_id"] = "someone-else"
    assert verify_partition(0, _by_seq(entries)).first_break.kind == "event-id-mismatch"
    entries = _chain(4)
    entries[entry_key(0, 2)] = "not an entry"
    brk = verify_partition(0, _by_seq(entries)).first_break
    assert (brk.seq, brk.kind) == (2, "unreadable")


def test_first_break_is_reported_per_partition_and_overall():
    entries = {**_chain(5, partition=1), **_chain(5, partition=3), **_chain(2, partition=4)}
    entries[entry_key(3, 1)]["record"]["action"] = "job.delete"
    del entries[entry_key(1, 4)]
    entries[entry_key(1, 2)]["hash"] = "0" * 64  # first break of partition 1 is seq 2, not 4
    report = verify_entries(entries, partitions=range(5))
    assert not report.ok
    assert [(b.partition, b.seq, b.kind) for b in report.breaks] == [(1, 2, "hash-mismatch"), (3, 1, "hash-mismatch")]
    assert (report.first_break.partition, report.first_break.seq) == (1, 2)
    assert report.partitions[4].ok and report.total == 11


def test_stray_keys_are_not_ok():
    entries = _chain(2)
    entries["garbage"] = {"x": 1}
    report = verify_entries(entries, partitions=[0])
    assert not report.ok and report.stray_keys == ("garbage",) and report.first_break is None


def test_folding_the_changelog_keeps_the_last_value_and_applies_tombstones():
    e = _chain(3)
    records = [
        (entry_key(0, 0).encode(), json.dumps(e[entry_key(0, 0)]).encode()),
        (entry_key(0, 1).encode(), b'{"old": true}'),
        (entry_key(0, 2).encode(), json.dumps(e[entry_key(0, 2)]).encode()),
        (entry_key(0, 1).encode(), json.dumps(e[entry_key(0, 1)]).encode()),
        (b'"0:000000000009"', b"{}"),
        (entry_key(0, 9).encode(), None),
        (None, b"{}"),
    ]
    table = fold_changelog(records)
    assert table == e
    assert verify_entries(table, partitions=[0]).ok
    tampered = copy.deepcopy(e)
    tampered[entry_key(0, 1)]["record"]["actor"] = "x"
    records.append((entry_key(0, 1).encode(), json.dumps(tampered[entry_key(0, 1)]).encode()))
    assert verify_entries(fold_changelog(records), partitions=[0]).first_break.seq == 1


@pytest.mark.parametrize("raw", [b"\xff\xfe not json", b"[1, 2]"])
def test_undecodable_values_are_unreadable_breaks(raw):
    e = _chain(2)
    records = [(k.encode(), json.dumps(v).encode()) for k, v in e.items()] + [(entry_key(0, 1).encode(), raw)]
    brk = verify_entries(fold_changelog(records), partitions=[0]).first_break
    assert (brk.seq, brk.kind) == (1, "unreadable")


def _cli(monkeypatch, records, *args):  # noqa: ANN001
    from click.testing import CliRunner

    import app.ops.cli_audit

    async def fake_read(*, bootstrap, topic, timeout):  # noqa: ANN001
        assert topic == "cosmic-unit-audit_chain-changelog"
        return [0, 1], records

    monkeypatch.setattr(app.ops.cli_audit, "read_changelog", fake_read)
    monkeypatch.setenv("COSMIC_APP_ID", "cosmic-unit")
    return CliRunner().invoke(app.ops.cli_audit.audit, ["verify", *args])


def test_entries_come_out_of_their_blocks():
    e = {**_chain(2 * BLOCK_SIZE + 1, partition=0), **_chain(3, partition=4)}
    blocks = _blocks(e)
    assert sorted(blocks) == [block_key(0, 0), block_key(0, BLOCK_SIZE), block_key(0, 2 * BLOCK_SIZE), block_key(4, 0)]
    assert block_key(0, BLOCK_SIZE + 5) == entry_key(0, BLOCK_SIZE)
    assert entries_of_blocks(blocks) == e
    report = verify_entries(entries_of_blocks(blocks), partitions=range(5))
    assert report.ok and report.total == 2 * BLOCK_SIZE + 4
    # an entry changed inside a block breaks the chain at its seq
    tampered = copy.deepcopy(blocks)
    tampered[block_key(0, BLOCK_SIZE)]["entries"][3]["record"]["actor"] = "mallory"
    brk = verify_entries(entries_of_blocks(tampered)).first_break
    assert (brk.partition, brk.seq, brk.kind) == (0, BLOCK_SIZE + 3, "hash-mismatch")
    # a block that is not one (no entries, too many, not at a block's first seq) is unreadable there
    for key, value in [(block_key(0, BLOCK_SIZE), {"offset": 1, "entries": []}),
                       (block_key(0, BLOCK_SIZE), {"offset": 1, "entries": [e[entry_key(0, 0)]] * (BLOCK_SIZE + 1)}),
                       (block_key(0, BLOCK_SIZE), "not a block")]:
        brk = verify_entries(entries_of_blocks({**blocks, key: value})).first_break
        assert (brk.seq, brk.kind) == (BLOCK_SIZE, "unreadable"), value
    misplaced = {**blocks, entry_key(4, 1): blocks.pop(block_key(4, 0))}
    assert verify_entries(entries_of_blocks(misplaced)).first_break.partition == 4


def test_verify_command_exit_codes_and_output(monkeypatch):
    e = {**_chain(3, partition=0), **_chain(2, partition=1)}
    records = [(k.encode(), json.dumps(v).encode()) for k, v in _blocks(e).items()]
    ok = _cli(monkeypatch, records)
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[0] == "audit chain cosmic-unit-audit_chain-changelog: OK"
    assert "partition 0: 3 entries" in ok.output and "total: 5 entries in 2 partitions" in ok.output

    block = _blocks(copy.deepcopy(e))[block_key(1, 0)]
    tampered = block["entries"][1]
    tampered["record"]["actor"] = "mallory"
    records.append((block_key(1, 0).encode(), json.dumps(block).encode()))
    broken = _cli(monkeypatch, records)
    assert broken.exit_code == 1
    assert f"FIRST BREAK: partition 1 seq 1 (event {tampered['event_id']}): hash does not match" in broken.output
    as_json = _cli(monkeypatch, records, "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.output)
    assert report["ok"] is False and report["total"] == 5
    assert (report["first_break"]["partition"], report["first_break"]["seq"]) == (1, 1)
    assert report["first_break"]["found"] == tampered["hash"]


def test_verify_command_exits_2_when_the_changelog_cannot_be_read(monkeypatch):
    from click.testing import CliRunner

    import app.ops.cli_audit

    async def failing(*, bootstrap, topic, timeout):  # noqa: ANN001
        raise app.ops.cli_audit.ChangelogReadError(f"topic {topic} does not exist")

    monkeypatch.setattr(app.ops.cli_audit, "read_changelog", failing)
    result = CliRunner().invoke(app.ops.cli_audit.audit, ["verify", "--json"])
    assert result.exit_code == 2 and json.loads(result.output)["ok"] is False
