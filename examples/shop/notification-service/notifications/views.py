"""The CloudEvents endpoint Ferry delivers orders.v1 to, and the records of what was sent."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from ferry_shop import cloudevents

from .models import EmailSent
from .services import notify_order_created


@csrf_exempt
@require_POST
def order_events(request: HttpRequest) -> JsonResponse:
    try:
        event = cloudevents.parse(request)
    except cloudevents.Invalid as e:
        return cloudevents.refuse(str(e))
    if event.type != "order.created":
        return JsonResponse({"ignored": event.type})
    try:
        _, sent = notify_order_created(event.id, event.data)
    except (KeyError, ValueError) as e:
        # Permanent: the worker sends the event to the dead-letter topic with this reason.
        return cloudevents.refuse(f"order.created without a valid order_id/user_id/amount: {e}")
    return JsonResponse({"sent": sent, "event_id": event.id})


@require_GET
def notifications(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "emails_sent": [
                {
                    "event_id": r.event_id,
                    "order_id": str(r.order_id),
                    "user_id": str(r.user_id),
                    "amount": r.amount,
                }
                for r in EmailSent.objects.order_by("sent_at")
            ]
        }
    )


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})
