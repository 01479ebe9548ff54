"""Reading a CloudEvent in binary content mode, as Ferry's worker sends it (DESIGN §5): the
envelope's `data` is the JSON body, `ce-id` its event id, `ce-type` its event name.

What the answer means to the worker: 2xx done; 429 or 5xx retried; any other 4xx is permanent
and the event goes to the dead-letter topic at once, with the reason.
"""

import json
from dataclasses import dataclass

from django.http import HttpRequest, JsonResponse


@dataclass(frozen=True)
class CloudEvent:
    id: str
    type: str
    source: str
    data: dict


class Invalid(Exception):
    """A request that is not a CloudEvent this service can read: permanent (400)."""


def parse(request: HttpRequest) -> CloudEvent:
    """The CloudEvent in `request`, or Invalid naming what is wrong."""
    event_id = request.headers.get("ce-id")
    event_type = request.headers.get("ce-type")
    if not event_id or not event_type:
        raise Invalid("not a CloudEvent: ce-id and ce-type headers are required")
    try:
        data = json.loads(request.body or b"null")
    except ValueError as e:
        raise Invalid(f"body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise Invalid("body must be a JSON object (the envelope's data)")
    return CloudEvent(
        id=event_id,
        type=event_type,
        source=request.headers.get("ce-source", ""),
        data=data,
    )


def refuse(reason: str) -> JsonResponse:
    """A permanent refusal: the worker dead-letters the event with this reason."""
    return JsonResponse({"error": reason}, status=400)
