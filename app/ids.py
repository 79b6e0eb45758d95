"""Deterministic ids of effects: an event emitted because of a source event gets an id
derived from the source event's id (uuid5), so a replay re-emits the same ids and
downstream consumers apply them once.

The namespace and the ``"<purpose>:<source id>"`` name are part of the contract: changing
either changes every id already on the topics.
"""

from __future__ import annotations

import uuid

ID_NAMESPACE = uuid.UUID("6f1c1f2e-2b1d-4b8e-9a57-0c05a1c0de00")


def derived_id(source_event_id: str, purpose: str) -> str:
    """A deterministic event id for an effect of ``source_event_id``."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{purpose}:{source_event_id}"))
