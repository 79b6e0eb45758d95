"""Every integration test runs against the real local stack."""

import pytest


@pytest.fixture(autouse=True)
def _real_stack(stack):  # noqa: ANN001
    return stack
