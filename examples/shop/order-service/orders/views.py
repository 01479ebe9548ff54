"""HTTP API of the order-service: POST /orders (refused for users it has not heard of), the
user projection, and the CloudEvents endpoint Ferry delivers users.v1 to."""

import json
import uuid
from decimal import Decimal, InvalidOperation

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from ferry_shop import cloudevents

from .models import Order, UserProjection
from .services import UnknownUser, apply_user_event, create_order_and_enqueue

USER_EVENTS = {"user.created", "user.updated"}


def _json(order: Order) -> dict:
    return {
        "id": str(order.id),
        "user_id": str(order.user_id),
        "amount": str(order.amount),
        "status": order.status,
    }


@csrf_exempt
@require_http_methods(["GET", "POST"])
def orders(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"orders": [_json(o) for o in Order.objects.order_by("created_at")]})
    try:
        body = json.loads(request.body or b"{}")
        user_id = uuid.UUID(str(body["user_id"]))
        amount = Decimal(str(body["amount"]))
        if not amount.is_finite() or amount <= 0:
            raise ValueError("amount must be positive")
    except (ValueError, KeyError, TypeError, InvalidOperation) as e:
        return JsonResponse({"error": f"expected {{user_id, amount}}: {e}"}, status=400)
    try:
        order = create_order_and_enqueue(user_id, amount)
    except UnknownUser:
        return JsonResponse({"error": f"unknown user {user_id}"}, status=422)
    return JsonResponse(_json(order), status=201)


@require_GET
def known_users(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "users": [
                {"user_id": str(u.user_id), "email": u.email, "name": u.name}
                for u in UserProjection.objects.order_by("email")
            ]
        }
    )


@csrf_exempt
@require_POST
def user_events(request: HttpRequest) -> JsonResponse:
    try:
        event = cloudevents.parse(request)
    except cloudevents.Invalid as e:
        return cloudevents.refuse(str(e))
    if event.type not in USER_EVENTS:
        # Not ours to act on (a newer event type): done, nothing to do.
        return JsonResponse({"ignored": event.type})
    try:
        apply_user_event(event.id, event.data)
    except (KeyError, ValueError) as e:
        return cloudevents.refuse(f"{event.type} without a valid user_id/email: {e}")
    return JsonResponse({"applied": event.id})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})
