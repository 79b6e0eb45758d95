"""Deterministic ids of effects: an event emitted because of a source event gets an id
derived from the source event's id (uuid5), so a replay re-emits the same ids and
downstream consumers apply them once.

The namespace and the ``"<purpose>:<source id>"`` name are part of the contract: changing
either changes every id already on the topics.
"""

from __future__ import annotations

import hashlib
import uuid

ID_NAMESPACE = uuid.UUID("6f1c1f2e-2b1d-4b8e-9a57-0c05a1c0de00")
_NAMESPACE_BYTES = ID_NAMESPACE.bytes


def derived_id(source_event_id: str, purpose: str) -> str:
    """A deterministic event id for an effect of ``source_event_id``: exactly
    ``str(uuid.uuid5(ID_NAMESPACE, f"{purpose}:{source_event_id}"))``, without building the
    intermediate UUID objects (one or two ids per event on the hot path)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{purpose}:{source_event_id}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
