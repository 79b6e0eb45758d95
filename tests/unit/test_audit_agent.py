"""record_audit_trail without a broker: Faust's agent test context on the memory store."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from agents.audit import AUDIT_HITS, chain_head, record_audit_trail
from app.core.audit_chain import BLOCK_SIZE, GENESIS_HASH, block_key, chain_hash, entries_of_blocks, verify_entries
from app.core.models import AuditRecord
from app.core.validation import event_to_json
from app.worker.main import app, codecs
from app.worker.streams import DUPLICATES_DROPPED
from tables.audit_chain import audit_chain, audit_chain_heads, chain_entries, chain_entry, store_entry
from tables.audit_index import actor_records, audit_by_actor, audit_by_resource

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def memory_app_patches():
    """The agent's hit counters start at zero."""
    AUDIT_HITS.clear()


def _audit(resource_id: str, *, actor: str = "alice", step: int = 0, action: str = "job.transition") -> AuditRecord:
    return AuditRecord(
        event_id=str(uuid.uuid4()), event_type="AuditRecord", timestamp=T0 + timedelta(seconds=step),
        correlation_id=str(uuid.uuid4()), user_id=actor, schema_version=1, action=action, actor=actor,
        resource_type="job", resource_id=resource_id, outcome="SUCCESS", before=None,
        after='{"status": "QUEUED"}', source_event_id=str(uuid.uuid4()),
    )


def _encode(event: AuditRecord) -> bytes:
    return codecs.for_topic("audit-trail").encode(event)


async def _put(agent, event: AuditRecord, *, partition: int, offset: int | None = None) -> None:  # noqa: ANN001
    if offset is not None:
        agent.sent_offset = offset  # the same offset again: a replay after a crash
    await agent.put(_encode(event), key=event.resource_id.encode(), partition=partition,
                    timestamp=event.timestamp.timestamp())


def _table_entries() -> dict:
    """The stored chain entries by entry key (taken out of their blocks)."""
    return entries_of_blocks({k: audit_chain.data[k] for k in audit_chain.data.keys()})


def _chain_of(partition: int) -> list[dict]:
    entries = _table_entries()
    return [entries[k] for k in sorted(k for k in entries if k.startswith(f"{partition}:"))]


def _set_block(partition: int, seq: int, entries: list[dict]) -> None:
    """Replace, in the store, the block holding entry ``seq`` (as a crash could leave it)."""
    audit_chain.data[block_key(partition, seq)] = {"offset": entries[-1]["source_offset"], "entries": entries}


async def test_records_chain_per_partition_with_contiguous_seqs_and_are_indexed(memory_app):
    on_0 = [_audit("job-a", actor="alice" if i % 2 else "bob", step=i) for i in range(7)]
    on_3 = [_audit("job-b", actor="alice", step=100 + i) for i in range(5)]
    async with record_audit_trail.test_context() as agent:
        for first, second in zip(on_0, on_3):
            await _put(agent, first, partition=0)
            await _put(agent, second, partition=3)
        for event in on_0[len(on_3):]:
            await _put(agent, event, partition=0)

        chain0, chain3 = _chain_of(0), _chain_of(3)
        assert [e["seq"] for e in chain0] == list(range(7)) and [e["seq"] for e in chain3] == list(range(5))
        assert [e["event_id"] for e in chain0] == [e.event_id for e in on_0]
        assert [e["event_id"] for e in chain3] == [e.event_id for e in on_3]
        # each entry: the record's JSON, chained to the previous hash
        prev = GENESIS_HASH
        for seq, (entry, event) in enumerate(zip(chain0, on_0)):
            assert entry["record"] == event_to_json(event)
            assert entry["prev_hash"] == prev and entry["hash"] == chain_hash(prev, event_to_json(event), seq)
            prev = entry["hash"]
        offsets = [e["source_offset"] for e in chain0]
        assert offsets == sorted(offsets) and len(set(offsets)) == 7
        report = verify_entries(_table_entries(), partitions=range(5))
        assert report.ok and report.total == 12
        assert audit_chain_heads["0"] == {"offset": chain0[-1]["source_offset"], "seq": 6, "hash": chain0[-1]["hash"]}
        assert audit_chain_heads["3"]["seq"] == 4

        by_resource = audit_by_resource["job-a"]["records"]
        assert [r["event_id"] for r in by_resource] == [e.event_id for e in on_0]
        assert [(r["partition"], r["seq"]) for r in by_resource] == [(0, s) for s in range(7)]
        first = by_resource[0]
        assert {k: first[k] for k in ("action", "actor", "outcome", "resource_id", "at")} == {
            "action": "job.transition", "actor": "bob", "outcome": "SUCCESS", "resource_id": "job-a",
            "at": "2024-05-01T12:00:00.000Z",
        }
        alice_0 = [r["event_id"] for r in actor_records(partition=0, actor="alice")]
        alice_3 = [r["event_id"] for r in actor_records(partition=3, actor="alice")]
        # the actor index keeps chain positions; its items equal the resource index's
        assert actor_records(partition=0, actor="bob")[0] == first
        assert audit_by_actor["0/alice"]["seqs"] == [r["seq"] for r in by_resource if r["actor"] == "alice"]
        assert alice_0 == [e.event_id for e in on_0 if e.actor == "alice"]
        assert alice_3 == [e.event_id for e in on_3]
        assert [r["event_id"] for r in actor_records(partition=0, actor="bob")] == [
            e.event_id for e in on_0 if e.actor == "bob"]
    assert memory_app["dead"] == []


async def test_a_duplicate_event_id_is_dropped_and_counted_not_chained(memory_app):
    dropped = DUPLICATES_DROPPED["audit-trail"]
    events = [_audit("job-d", step=i) for i in range(3)]
    async with record_audit_trail.test_context() as agent:
        for event in events:
            await _put(agent, event, partition=1)
        await _put(agent, events[1], partition=1)  # re-emitted with the same id, at a new offset
        await agent.put(b"not avro at all", key=b"job-d", partition=1)
        await _put(agent, _audit("job-d", step=9), partition=1)
        chain = _chain_of(1)
        assert [e["seq"] for e in chain] == [0, 1, 2, 3]
        assert [e["event_id"] for e in chain[:3]] == [e.event_id for e in events]
        assert len(audit_by_resource["job-d"]["records"]) == 4
        assert verify_entries(_table_entries()).ok
    assert [reason for _, reason, _ in memory_app["dead"]] == ["undecodable:not-framed"]
    assert AUDIT_HITS["duplicate"] == 1 and DUPLICATES_DROPPED["audit-trail"] == dropped + 1


async def test_a_duplicate_in_a_later_batch_is_caught_by_the_resource_index(memory_app):
    event = _audit("job-w")
    async with record_audit_trail.test_context() as agent:
        await _put(agent, event, partition=2)
        other = _audit("job-other")
        await _put(agent, other, partition=2)
        await _put(agent, event, partition=2)  # a copy re-emitted after a crash, at a new offset
        assert [e["event_id"] for e in _chain_of(2)] == [event.event_id, other.event_id]
        assert [i["event_id"] for i in audit_by_resource["job-w"]["records"]] == [event.event_id]
    assert memory_app["dead"] == [] and AUDIT_HITS["duplicate"] == 1


async def test_replaying_offsets_after_a_crash_chains_nothing_twice(memory_app):
    events = [_audit("job-r", step=i) for i in range(4)]
    async with record_audit_trail.test_context() as agent:
        offsets = []
        for event in events:
            offsets.append(agent.sent_offset)
            await _put(agent, event, partition=4)
        await _put(agent, events[2], partition=4)  # a duplicate, dropped
        dup_offset = agent.sent_offset - 1
        before = _table_entries()
        # the worker restarts from an older committed offset and sees it all again
        for offset, event in zip(offsets, events):
            await _put(agent, event, partition=4, offset=offset)
        await _put(agent, events[2], partition=4, offset=dup_offset)
        assert _table_entries() == before
        assert [r["event_id"] for r in audit_by_resource["job-r"]["records"]] == [e.event_id for e in events]
        assert len(audit_by_actor["4/alice"]["seqs"]) == 4 and len(actor_records(partition=4, actor="alice")) == 4
    assert memory_app["dead"] == [] and AUDIT_HITS["duplicate"] == 2
    assert AUDIT_HITS["replay"] == 4


async def test_a_lost_head_pointer_is_repaired_from_the_entries(memory_app):
    events = [_audit("job-h", step=i) for i in range(5)]
    async with record_audit_trail.test_context() as agent:
        offsets = []
        for event in events[:3]:
            offsets.append(agent.sent_offset)
            await _put(agent, event, partition=0)
        before = _table_entries()
        # entries 1 and 2 reached the changelog, the head pointer's last two writes did not
        first = chain_entry(0, 0)
        audit_chain_heads.data["0"] = {"offset": first["source_offset"], "seq": 0, "hash": first["hash"]}
        assert chain_head(0).seq == 2
        await _put(agent, events[2], partition=0, offset=offsets[2])  # replayed
        assert _table_entries() == before and audit_chain_heads["0"]["seq"] == 2
        for event in events[3:]:
            await _put(agent, event, partition=0)
        assert [e["event_id"] for e in _chain_of(0)] == [e.event_id for e in events]
        assert verify_entries(_table_entries()).ok
        # no head pointer at all: found by walking the entries
        del audit_chain_heads.data["0"]
        assert chain_head(0).seq == 4 and chain_head(0).hash == _chain_of(0)[-1]["hash"]
    assert memory_app["dead"] == []


async def test_a_lost_entry_is_chained_again_with_the_same_hash(memory_app):
    events = [_audit("job-e", step=i) for i in range(4)]
    async with record_audit_trail.test_context() as agent:
        offsets = []
        for event in events[:3]:
            offsets.append(agent.sent_offset)
            await _put(agent, event, partition=2)
        before = _table_entries()
        # the head pointer, processed id and indexes of entry 2 survived; entry 2 itself did not
        _set_block(2, 2, _chain_of(2)[:2])
        assert chain_head(2).seq == 1
        await _put(agent, events[2], partition=2, offset=offsets[2])  # replayed: not a duplicate
        assert _table_entries() == before  # same seq, same prev hash, same hash
        await _put(agent, events[3], partition=2)
        assert [e["seq"] for e in _chain_of(2)] == [0, 1, 2, 3]
        assert verify_entries(_table_entries()).ok
        assert len(audit_by_resource["job-e"]["records"]) == 4
    assert memory_app["dead"] == []


async def test_the_chain_head_skips_an_entry_that_does_not_link(memory_app):
    events = [_audit("job-x", step=i) for i in range(2)]
    async with record_audit_trail.test_context() as agent:
        for event in events:
            await _put(agent, event, partition=1)
        chain = _chain_of(1)
        _set_block(1, 2, [*chain, {**chain[1], "seq": 2, "prev_hash": "f" * 64}])
        audit_chain_heads.data["1"] = {"offset": 0, "seq": 0, "hash": chain[0]["hash"]}
        assert chain_head(1).seq == 1


async def test_entries_fill_blocks_of_block_size_in_seq_order(memory_app):
    events = [_audit(f"job-{i % 3}", step=i) for i in range(2 * BLOCK_SIZE + 3)]
    async with record_audit_trail.test_context() as agent:
        for event in events:
            await _put(agent, event, partition=3)
        blocks = sorted(k for k in audit_chain.data.keys() if k.startswith("3:"))
        assert blocks == [block_key(3, 0), block_key(3, BLOCK_SIZE), block_key(3, 2 * BLOCK_SIZE)]
        assert [len(audit_chain.data[k]["entries"]) for k in blocks] == [BLOCK_SIZE, BLOCK_SIZE, 3]
        # a block's offset is its newest entry's: the changelog fence of every offset-fenced table
        assert all(audit_chain.data[k]["offset"] == audit_chain.data[k]["entries"][-1]["source_offset"] for k in blocks)
        chain = _chain_of(3)
        assert [e["event_id"] for e in chain] == [e.event_id for e in events]
        assert verify_entries(_table_entries()).ok
        assert chain_entry(3, BLOCK_SIZE) == chain[BLOCK_SIZE] and chain_entry(3, len(events)) is None
        assert chain_entries(3, [1, BLOCK_SIZE + 1, 99, -1]) == {1: chain[1], BLOCK_SIZE + 1: chain[BLOCK_SIZE + 1]}
        # an entry can only extend its block: one after a gap is refused
        with pytest.raises(ValueError, match="gap"):
            store_entry(3, {**chain[-1], "seq": len(events) + 1})
    assert memory_app["dead"] == []


def test_verify_reads_the_chain_tables_changelog():
    from app.core.audit_chain import changelog_topic_name

    assert audit_chain.changelog_topic.get_topic_name() == changelog_topic_name(app.conf.id)
    assert audit_chain.partitions == 5 and audit_by_resource.partitions == 5
