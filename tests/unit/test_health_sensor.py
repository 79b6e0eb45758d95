"""The commit tracker is a Faust sensor from the moment the app is declared.

Faust keeps per-sensor state for every send and commit in flight; a sensor added after some
began makes their completion raise KeyError and crash the consumer (seen on a restarted
worker with a backlog). So it must be registered at import, before any send."""

from __future__ import annotations

import app.worker.health as health
from app.worker.main import app


def test_commit_tracker_is_registered_when_the_app_is_declared():
    assert health.commit_tracker in set(app.sensors)


def test_a_send_begun_now_completes_with_the_tracker_state_present():
    state = app.sensors.on_send_initiated(app.producer, "t", message=None, keysize=0, valsize=0)
    assert health.commit_tracker in state
    commit_state = app.sensors.on_commit_initiated(app.consumer)
    assert health.commit_tracker in commit_state
    app.sensors.on_commit_completed(app.consumer, commit_state)
