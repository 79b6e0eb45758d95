"""`cosmic rebuild`'s recomputation and its difference report, without a broker."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.codecs import Codecs
from app.core.settings import Settings
from app.ops.rebuild import differences, recompute
from app.ops.workload import build_workload


@dataclass
class Record:  # the fields of aiokafka's ConsumerRecord that rebuild reads
    partition: int
    offset: int
    value: bytes


def _records(registry_client, workload):  # noqa: ANN001, ANN202
    codecs = Codecs(settings=Settings(topic_prefix="t-"), client=registry_client)
    codec = codecs.for_topic("job-lifecycle")
    records = [Record(0, i, codec.encode(e)) for i, e in enumerate(workload.deliveries)]
    records.append(Record(0, len(records), b"not avro"))  # skipped, like the agent dead-letters it
    return codecs, records


def test_recompute_reaches_every_final_state_despite_duplicates_and_swaps(registry_client):
    workload = build_workload(jobs=60, seed=3)
    codecs, records = _records(registry_client, workload)
    states = recompute(records=records, codecs=codecs, max_retries=3)
    assert {job: s["status"] for job, s in states.items()} == workload.final_status
    assert {job: s["retry_count"] for job, s in states.items()} == workload.retry_count


def test_one_job_and_every_kind_of_difference_is_reported(registry_client):
    workload = build_workload(jobs=20, seed=4)
    codecs, records = _records(registry_client, workload)
    full = recompute(records=records, codecs=codecs, max_retries=3)
    one = recompute(records=records, codecs=codecs, max_retries=3, job_id="job-00007")
    assert list(one) == ["job-00007"] and one["job-00007"]["status"] == full["job-00007"]["status"]
    table = {k: dict(v) for k, v in full.items()}
    assert differences(expected=full, actual=table) == []
    table["job-00003"]["status"] = "RUNNING"
    del table["job-00004"]
    table["job-stray"] = {"status": "QUEUED"}
    assert differences(expected=full, actual=table) == [
        {"job_id": "job-00003", "field": "status", "recomputed": full["job-00003"]["status"], "table": "RUNNING"},
        {"job_id": "job-00004", "problem": "missing from job_state"},
        {"job_id": "job-stray", "problem": "in job_state but not derivable from job-lifecycle"},
    ]
