"""The versioned event envelope of the reference guide, as an outbox row's payload:
{schema, event, id, ts, key, data, headers} (DESIGN §4). Ferry's relay publishes it as is,
keyed by the row's key; its worker delivers `data` with the rest as CloudEvent headers."""

import time
import uuid


def envelope(schema: str, event: str, key: dict, data: dict, source: str) -> dict:
    """A new envelope with a fresh event id (consumers de-duplicate on it) and the time now."""
    return {
        "schema": schema,
        "event": event,
        "id": str(uuid.uuid4()),
        "ts": int(time.time() * 1000),
        "key": key,
        "data": data,
        "headers": {"source": source},
    }
