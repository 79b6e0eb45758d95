"""Every integration test runs against the real local stack, and leaves no topics behind."""

from __future__ import annotations

import pytest

from support.topic_cleanup import delete_topics_of


@pytest.fixture(autouse=True)
def _real_stack(stack, uid):  # noqa: ANN001
    yield stack
    delete_topics_of(bootstrap=stack.kafka_bootstrap, uid=uid)
