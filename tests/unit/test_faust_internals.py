"""app/worker/faust_internals: installed only on the pinned versions; the producer-buffer flush drains
the buffer completely before offsets are committed (Faust's own gives up after 0.1 s without
progress); the app without Monitor is what the worker runs."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka.structs import TopicPartition
from faust.transport.producer import ProducerBuffer

import app.worker.main  # noqa: F401 - installs the patches
from app.core.errors import FaustVersionError
from app.worker import faust_internals, health  # noqa: F401 - health adds its own sensor
from app.worker.faust_internals.producer_buffer import _flush_completely


class SlowBuffer:
    """Stands in for a ProducerBuffer whose messages leave slowly (one per 0.15 s)."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.calls = 0

    @property
    def size(self) -> int:
        return self.pending

    async def flush_atmost(self, max_messages):  # noqa: ANN001
        # Faust's behaviour: no message sent within 0.1 s -> return, buffer not empty.
        self.calls += 1
        await asyncio.sleep(0.1)
        return 0

    async def drain_slowly(self) -> None:
        while self.pending:
            await asyncio.sleep(0.15)
            self.pending -= 1


async def test_flush_waits_until_the_buffer_is_empty():
    assert ProducerBuffer.flush is _flush_completely
    buffer = SlowBuffer(pending=4)
    drainer = asyncio.ensure_future(buffer.drain_slowly())
    await _flush_completely(buffer)  # type: ignore[arg-type]
    assert buffer.size == 0 and buffer.calls > 1
    await drainer


async def test_flush_of_an_empty_buffer_returns_at_once():
    buffer = SlowBuffer(pending=0)
    buffer.flush_atmost = lambda max_messages: asyncio.sleep(0, result=0)  # type: ignore[method-assign]
    await asyncio.wait_for(_flush_completely(buffer), timeout=1)  # type: ignore[arg-type]


def test_other_versions_are_refused_by_name():
    faust_internals.check_versions()  # the installed ones are the pinned ones
    installed = dict(faust_internals.PINNED, **{"faust-streaming": "0.16.0"})
    with pytest.raises(FaustVersionError, match="faust-streaming 0.16.0 .*0.15.3"):
        faust_internals.check_versions(installed=installed)
    missing = {k: v for k, v in faust_internals.PINNED.items() if k != "aiokafka"}
    with pytest.raises(FaustVersionError, match="aiokafka not installed"):
        faust_internals.check_versions(installed=missing)


def test_the_worker_runs_without_the_monitor_sensor():
    assert isinstance(app.worker.main.app, faust_internals.App)
    list(app.worker.main.app.on_init_dependencies())
    assert app.worker.main.app.monitor not in set(app.worker.main.app.sensors)
    assert any(type(s).__name__ == "CommitTracker" for s in app.worker.main.app.sensors)  # health's own sensor stays


def test_importing_checks_the_imported_modules_versions_without_reading_metadata(monkeypatch):
    import faust

    from app.worker.faust_internals import imported_versions

    assert imported_versions() == {k: v for k, v in faust_internals.PINNED.items()
                                   if k not in ("mode-streaming", "aiormq")}  # no __version__ in these
    monkeypatch.setattr(faust_internals.metadata, "version", lambda name: pytest.fail(f"metadata read for {name}"))
    faust_internals.install(fetch_max_wait_ms=100)  # the pinned versions are imported: no error, no metadata read
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(FaustVersionError, match="faust-streaming 0.16.0"):
        faust_internals.install(fetch_max_wait_ms=100)


async def test_the_worker_consumer_waits_the_settings_fetch_wait_not_faust_s_1500_ms():
    from app.worker.faust_internals.fetch import worker_consumer_fetch_wait
    from app.worker.main import app, settings

    assert settings.consumer_fetch_max_wait_ms == 100
    assert await worker_consumer_fetch_wait(app) == 100


async def test_the_worker_consumer_knows_faust_s_consumer_so_its_fetcher_can_skip_what_faust_paused():
    from app.worker.faust_internals.fetch import FAUST_CONSUMER_ATTR
    from app.worker.main import app

    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert getattr(consumer._subscription, FAUST_CONSUMER_ATTR) is app.consumer
    finally:
        await consumer.stop()


def _fetcher(*, paused: set, records: dict) -> SimpleNamespace:
    """Just enough of an aiokafka Fetcher for its ``_get_actions_per_node`` (one broker, node 0),
    its subscription state holding a Faust consumer that paused ``paused``."""
    from app.worker.faust_internals.fetch import FAUST_CONSUMER_ATTR

    subscriptions = SimpleNamespace(**{FAUST_CONSUMER_ATTR: SimpleNamespace(_paused_partitions=paused)})
    return SimpleNamespace(
        _subscriptions=subscriptions, _records=records, _in_flight=set(), _select_read_replica=lambda tp: 0,
        _client=SimpleNamespace(cluster=SimpleNamespace(leader_for_partition=lambda tp: 0)),
        _max_partition_fetch_bytes=1 << 20, _fetch_max_wait_ms=100, _fetch_min_bytes=1, _fetch_max_bytes=50 << 20,
        _isolation_level=0, _client_rack=None, _fetcher_timeout=0.2,
    )


def _assignment(tps: list) -> SimpleNamespace:
    state = SimpleNamespace(has_valid_position=True, paused=False, position=7, resume_fut=None)
    return SimpleNamespace(tps=tps, state_value=lambda tp: state)


def _fetched(actions) -> set:  # noqa: ANN001
    requests = actions[0]
    return {TopicPartition(topic, partition) for _, request in requests for topic, parts in request.topics
            for partition, _, _ in parts}


def test_the_fetcher_leaves_out_the_partitions_faust_paused_and_drops_what_it_holds_of_them():
    from app.worker.faust_internals.fetch import ALL_PAUSED_RECHECK_S, _get_actions_per_node

    source = [TopicPartition("job-lifecycle", p) for p in range(3)]
    changelog = [TopicPartition("app-job_state-changelog", p) for p in range(3)]
    held = object()
    # Faust paused its active table's changelog partitions; one of them holds fetched records
    fetcher = _fetcher(paused={*changelog}, records={changelog[1]: held})
    actions = _get_actions_per_node(fetcher, _assignment(source + changelog))
    assert _fetched(actions) == set(source)
    assert fetcher._records == {}  # never read while paused; fetched again from its position on resume
    assert actions[2] == 0.2  # aiokafka's own timeout while something is fetched
    # nothing paused (or a consumer that is not Faust's, like the websocket hub's): aiokafka's behaviour
    fetcher = _fetcher(paused=set(), records={})
    assert _fetched(_get_actions_per_node(fetcher, _assignment(source + changelog))) == set(source + changelog)
    del fetcher._subscriptions._cosmic_faust_consumer
    assert _fetched(_get_actions_per_node(fetcher, _assignment(source + changelog))) == set(source + changelog)
    # a rebalance: Faust paused everything; the fetcher looks again soon for what it resumes
    fetcher = _fetcher(paused={*source, *changelog}, records={source[0]: held})
    actions = _get_actions_per_node(fetcher, _assignment(source + changelog))
    assert _fetched(actions) == set() and fetcher._records == {} and actions[2] == ALL_PAUSED_RECHECK_S


@pytest.mark.parametrize("raw", ["0", "30001", "x"])
def test_a_bad_fetch_wait_is_refused_naming_the_variable(raw):
    from app.core.errors import ConfigError
    from app.core.settings import Settings

    with pytest.raises(ConfigError, match="COSMIC_CONSUMER_FETCH_MAX_WAIT_MS"):
        Settings.from_env(environ={"COSMIC_CONSUMER_FETCH_MAX_WAIT_MS": raw})


def test_committed_offsets_are_a_copy_of_the_consumers_and_empty_before_any_commit():
    from app.worker.faust_internals.state import committed_offsets

    consumer = SimpleNamespace(_committed_offset={"tp-0": 5})
    offsets = committed_offsets(consumer)
    offsets["tp-0"] = 9
    assert consumer._committed_offset == {"tp-0": 5}
    assert committed_offsets(SimpleNamespace(_committed_offset=None)) == {}
    assert committed_offsets(SimpleNamespace()) == {}


def test_a_changelog_the_consumer_counts_zero_partitions_of_is_trusted_and_a_known_one_is_checked():
    from app.worker.faust_internals.state import trust_unknown_changelog

    table = SimpleNamespace(_verified_source_topics_for_partitions=set(), changelog_topic_name="t-changelog")
    trust_unknown_changelog(table, source_topic="src", consumer=SimpleNamespace(topic_partitions=lambda _: 10))
    assert table._verified_source_topics_for_partitions == set()  # known: Faust checks it as usual
    trust_unknown_changelog(table, source_topic="src", consumer=SimpleNamespace(topic_partitions=lambda _: 0))
    assert table._verified_source_topics_for_partitions == {"src"}


def test_stream_partitions_without_a_committed_offset_are_sought_to_their_beginning():
    from faust.transport.consumer import Consumer

    from app.worker.faust_internals import seek

    committed = {TopicPartition("p-job-lifecycle", 0): None, TopicPartition("p-job-lifecycle", 1): 12,
                 TopicPartition("p-job-lifecycle", 2): -1, TopicPartition("app-job_state-changelog", 0): None}
    assert seek.never_committed(committed=committed, changelog_topics={"app-job_state-changelog"}) == [
        TopicPartition("p-job-lifecycle", 0), TopicPartition("p-job-lifecycle", 2)]
    assert Consumer.perform_seek is seek._perform_seek  # installed with the other patches


async def test_perform_seek_rewinds_only_never_committed_stream_partitions():
    from app.worker.faust_internals import seek

    rewound: list = []

    sought: dict = {}
    requests: list = []

    async def fetch_committed_offsets(partitions):
        requests.append(sorted(partitions))
        return {TopicPartition("t", 1): SimpleNamespace(offset=7), TopicPartition("t", 2): SimpleNamespace(offset=0),
                TopicPartition("t-changelog", 0): SimpleNamespace(offset=-1)}

    kafka = SimpleNamespace(
        _subscription=SimpleNamespace(assigned_partitions=lambda: {
            TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2), TopicPartition("t-changelog", 0)}),
        _coordinator=SimpleNamespace(fetch_committed_offsets=fetch_committed_offsets),
        _fetcher=SimpleNamespace(seek_to=lambda tp, offset: sought.__setitem__(tp, offset)))

    async def call_thread(fun, *args):
        return await fun(*args)

    async def seek_to_beginning(*partitions):
        rewound.extend(partitions)

    consumer = SimpleNamespace(
        _read_offset={TopicPartition("t", 0): 5}, _committed_offset={},
        _thread=SimpleNamespace(seek_to_beginning=seek_to_beginning, call_thread=call_thread,
                                _ensure_consumer=lambda: kafka),
        app=SimpleNamespace(conf=SimpleNamespace(consumer_auto_offset_reset="earliest"),
                            tables=SimpleNamespace(changelog_topics={"t-changelog"})))
    await seek._perform_seek(consumer)
    assert len(requests) == 1 and len(requests[0]) == 4  # every partition's committed offset in one request
    assert sought == {TopicPartition("t", 1): 7}  # as aiokafka's seek_to_committed: offsets > 0 only
    assert sorted(rewound) == [TopicPartition("t", 0), TopicPartition("t", 2)]
    assert consumer._read_offset[TopicPartition("t", 0)] is None and consumer._read_offset[TopicPartition("t", 1)] == 7
    assert consumer._committed_offset == {TopicPartition("t", 1): 7, TopicPartition("t", 2): None}  # as Faust records them
