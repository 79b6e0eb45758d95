"""Deterministic ids of effects (app/core/ids.py): the values already on the topics must not change."""

from __future__ import annotations

import uuid

import pytest

from app.core.ids import ID_NAMESPACE, derived_id

SOURCE = "3f2b8a1e-0000-4000-8000-000000000001"


def test_the_namespace_is_the_one_ids_were_derived_with():
    assert ID_NAMESPACE == uuid.UUID("6f1c1f2e-2b1d-4b8e-9a57-0c05a1c0de00")


@pytest.mark.parametrize(("purpose", "expected"), [
    ("audit", "fc5c98b7-abcd-57a9-a9d8-f35e88e750cb"),
    ("notification", "afbf29b1-2cf2-5f14-8629-a2e2ce061918"),
    ("alert:runtime_anomaly", "2b8c4a25-7f04-5288-a67f-ef8961366cda"),
])
def test_derived_ids_are_unchanged(purpose, expected):  # noqa: ANN001
    assert derived_id(SOURCE, purpose) == expected


def test_derived_ids_are_uuid5_of_purpose_and_source_id():
    import random
    import uuid

    from app.core.ids import ID_NAMESPACE, derived_id

    rng = random.Random(7)
    for n in range(2000):
        source = str(uuid.UUID(int=rng.getrandbits(128))) if n % 2 else "é" * rng.randint(0, 40)
        purpose = rng.choice(["audit", "notification", "alert"])
        assert derived_id(source, purpose) == str(uuid.uuid5(ID_NAMESPACE, f"{purpose}:{source}"))
