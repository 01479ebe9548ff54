"""Writing an order (with its orders.v1 event, one transaction) and keeping the user
projection current from users.v1."""

import uuid
from decimal import Decimal

from django.db import transaction
from ferry_shop.envelope import envelope

from .models import Order, Outbox, UserProjection

TOPIC = "orders.v1"


class UnknownUser(Exception):
    """The order names a user this service has not heard of (no users.v1 event yet)."""


def create_order_and_enqueue(user_id: uuid.UUID, amount: Decimal) -> Order:
    with transaction.atomic():
        if not UserProjection.objects.filter(user_id=user_id).exists():
            raise UnknownUser(str(user_id))
        order = Order.objects.create(id=uuid.uuid4(), user_id=user_id, amount=amount)
        key = {"order_id": str(order.id)}
        Outbox.objects.create(
            topic=TOPIC,
            key=key,
            payload=envelope(
                schema=TOPIC,
                event="order.created",
                key=key,
                data={
                    "order_id": str(order.id),
                    "user_id": str(order.user_id),
                    "amount": str(order.amount),
                    "status": order.status,
                },
                source="order-service",
            ),
            headers={"source": "order-service"},
        )
    return order


def apply_user_event(event_id: str, data: dict) -> UserProjection:
    """Upserts the user from a user.created/user.updated event. Idempotent: a re-delivery
    writes the same state again."""
    user_id = uuid.UUID(str(data["user_id"]))
    projection, _ = UserProjection.objects.update_or_create(
        user_id=user_id,
        defaults={
            "email": str(data["email"]),
            "name": str(data.get("name", "")),
            "last_event_id": event_id,
        },
    )
    return projection
