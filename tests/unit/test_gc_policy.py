"""The worker's garbage-collector policy."""

from __future__ import annotations

import gc

import pytest

from app.core.settings import Settings
from app.worker.gc_policy import THRESHOLDS, apply_gc_policy


@pytest.fixture
def restore_gc():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_the_policy_raises_thresholds_and_freezes_start_up_objects(restore_gc):
    assert gc.get_freeze_count() == 0
    assert apply_gc_policy(enabled=True) == THRESHOLDS
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() > 10_000  # the modules and objects imported so far


def test_off_leaves_the_collector_alone(restore_gc):
    before = gc.get_threshold()
    assert apply_gc_policy(enabled=False) == before
    assert gc.get_freeze_count() == 0


def test_it_is_on_by_default_and_can_be_switched_off():
    assert Settings().gc_tuning is True
    assert Settings.from_env(environ={"COSMIC_GC_TUNING": "false"}).gc_tuning is False


async def test_the_worker_applies_it_when_it_starts(restore_gc):
    from app.worker.main import app

    started = [task for task in app._app_tasks if task.__name__ == "tune_garbage_collector"]
    assert len(started) == 1  # a task of the app: run once the worker has started
    await started[0]()
    assert gc.get_threshold() == THRESHOLDS and gc.get_freeze_count() > 0
