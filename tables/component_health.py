"""``component_health``: component → its latest health report and alert state.

Value: ``{"offset", "status", "metrics", "details", "reported_at", "firing", "dlq_samples",
"last_report_at", "interval_seconds", "last_alerts"}`` — the alert-rule state of
:mod:`app.core.alert_rules` plus the latest report. Keyed like ``system-health`` (the component),
so it is co-partitioned with its source; ``offset`` fences replays, ``last_alerts`` lets a
replayed report re-emit exactly the alerts it raised.
"""

from __future__ import annotations

from app.core.topic_specs import SYSTEM_HEALTH
from app.worker.table_fencing import fenced_table
from tables import copartitioned_table

component_health = copartitioned_table(
    declare=fenced_table, name="component_health", topic=SYSTEM_HEALTH,
    help="component -> latest health report and firing alerts",
)
