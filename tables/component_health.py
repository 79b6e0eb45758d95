"""``component_health``: component → its latest health report and alert state.

Value: ``{"offset", "status", "metrics", "details", "reported_at", "firing", "dlq_samples",
"last_report_at", "interval_seconds", "last_alerts"}`` — the alert-rule state of
:mod:`app.alert_rules` plus the latest report. Keyed like ``system-health`` (the component),
so it is co-partitioned with its source; ``offset`` fences replays, ``last_alerts`` lets a
replayed report re-emit exactly the alerts it raised.
"""

from __future__ import annotations

from app.main import app
from app.table_fencing import fenced_table
from app.topic_specs import SYSTEM_HEALTH, spec_by_name

component_health = fenced_table(
    app,
    "component_health",
    default=None,
    key_type=str,
    partitions=spec_by_name(SYSTEM_HEALTH).partitions,
    help="component -> latest health report and firing alerts",
)
