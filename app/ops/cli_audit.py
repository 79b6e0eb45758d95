"""``cosmic audit``: check the audit hash chain.

``cosmic audit verify`` reads the ``audit_chain`` table's changelog topic
(``<COSMIC_APP_ID>-audit_chain-changelog``) from Kafka from beginning to end with a plain
consumer (no consumer group, nothing committed), folds it into the table (the last value
of a key wins, a tombstone deletes it), takes the entries out of their blocks
(:func:`app.core.audit_chain.entries_of_blocks`) and recomputes every partition's chain in seq
order (:func:`app.core.audit_chain.verify_entries`). It prints the entries per partition and
exits 0 when every chain is intact; otherwise it names the first break of each broken
partition — partition, seq, event id, what was expected and what was found — and exits 1.
Exit 2: the changelog could not be read (no such topic, Kafka unreachable).
"""

from __future__ import annotations

import asyncio
import json
import sys

import click

from app.core.audit_chain import (
    VerifyReport, changelog_topic_name, entries_of_blocks, fold_changelog, verify_entries,
)
from app.core.errors import ConfigError, CosmicError
from app.core.settings import Settings
from app.ops.topic_reader import TopicReadError, read_topic, topic_partitions


#: Reading the changelog failed (kept as a name of its own for callers of this module).
ChangelogReadError = TopicReadError


async def read_changelog(*, bootstrap: str, topic: str, timeout: float = 60.0
                         ) -> tuple[list[int], list[tuple[bytes | None, bytes | None]]]:
    """Every record of ``topic`` up to its current end offsets: (partitions, [(key, value)]).

    Keys never move between partitions, so per-partition log order is enough.
    """
    try:
        partitions = await topic_partitions(bootstrap=bootstrap, topic=topic, timeout=timeout)
    except TopicReadError as exc:
        if "does not exist" in str(exc):
            raise TopicReadError(f"{exc} (has a worker with this COSMIC_APP_ID run?)") from exc
        raise
    records = await read_topic(bootstrap=bootstrap, topic=topic, timeout=timeout, partitions=partitions)
    return partitions, [(r.key, r.value) for r in records]


async def verify_chain(*, settings: Settings, timeout: float = 60.0) -> tuple[str, VerifyReport]:
    """(changelog topic, report) for the app of ``settings``."""
    topic = changelog_topic_name(settings.app_id)
    partitions, records = await read_changelog(bootstrap=settings.kafka_bootstrap, topic=topic, timeout=timeout)
    return topic, verify_entries(entries_of_blocks(fold_changelog(records)), partitions=partitions)


def _print_report(topic: str, report: VerifyReport) -> None:
    click.echo(f"audit chain {topic}: {'OK' if report.ok else 'BROKEN'}")
    for part in report.partitions:
        line = f"  partition {part.partition}: {part.entries} entries"
        if part.ok:
            line += f", head seq {part.head_seq} hash {part.head_hash[:16]}…" if part.entries else ""
        else:
            line += f", {part.verified} verified, BREAK at seq {part.first_break.seq}"  # type: ignore[union-attr]
        click.echo(line)
    for key in report.stray_keys:
        click.echo(f"  stray key (not a chain entry): {key!r}")
    click.echo(f"  total: {report.total} entries in {len(report.partitions)} partitions")
    first = report.first_break
    if first is not None:
        click.echo(f"FIRST BREAK: {first.message()}")
        for other in report.breaks[1:]:
            click.echo(f"also broken: {other.message()}")


@click.group("audit", help="The audit trail's hash chain.")
def audit() -> None:
    pass


@audit.command("verify", help="Recompute every partition's audit hash chain; exit 1 at a break.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to read the changelog.")
def verify(as_json: bool, timeout: float) -> None:
    try:
        settings = Settings.from_env()
        topic, report = asyncio.run(verify_chain(settings=settings, timeout=timeout))
    except (ConfigError, CosmicError) as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": str(exc)}))
        else:
            click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps({"topic": topic, **report.to_dict()}, indent=2))
    else:
        _print_report(topic, report)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    audit()
