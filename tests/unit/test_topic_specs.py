from app.core.topic_specs import DAY_MS, EXTRA_TOPICS, SOURCE_TOPICS, all_topic_specs, spec_by_name


def test_source_topics_follow_seed_001():
    expected = {
        "job-lifecycle": (10, 30, "job_id"),
        "job-metrics": (20, 30, "job_id"),
        "audit-trail": (5, 90, "resource_id"),
        "notifications": (5, 7, "user_id"),
        "system-health": (3, 7, "component"),
    }
    got = {s.name: (s.partitions, s.retention_ms // DAY_MS, s.key) for s in SOURCE_TOPICS}
    assert got == expected


def test_every_source_topic_has_a_dead_letter_topic_like_it():
    names = {s.name for s in all_topic_specs()}
    for source in SOURCE_TOPICS:
        dlq = spec_by_name(source.name + ".dlq")
        assert dlq.name in names
        assert (dlq.partitions, dlq.retention_ms, dlq.key) == (source.partitions, source.retention_ms, source.key)
        assert not dlq.has_dead_letter
    assert len(all_topic_specs()) == 2 * len(SOURCE_TOPICS) + len(EXTRA_TOPICS)


def test_configs_are_what_ensure_checks():
    assert spec_by_name("audit-trail").configs() == {"retention.ms": str(90 * DAY_MS), "cleanup.policy": "delete"}


def test_compacted_topics_carry_no_retention():
    compacted = [spec for spec in EXTRA_TOPICS if spec.cleanup_policy == "compact"]
    assert [spec.name for spec in compacted] == ["notification-preferences"]
    for spec in compacted:
        assert "retention.ms" not in spec.configs()
    assert spec_by_name("notification-outcomes").configs() == {"retention.ms": str(7 * DAY_MS),
                                                               "cleanup.policy": "delete"}
