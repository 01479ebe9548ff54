"""Sending the "order created" email once per event, however often the event arrives."""

import logging
import uuid

from django.db import transaction

from .models import EmailSent

log = logging.getLogger(__name__)


def notify_order_created(event_id: str, data: dict) -> tuple[EmailSent, bool]:
    """The record of the email for `event_id` and whether it was sent now (False: a
    re-delivery, nothing sent). Raises KeyError/ValueError for an event it cannot read."""
    order_id = uuid.UUID(str(data["order_id"]))
    user_id = uuid.UUID(str(data["user_id"]))
    amount = str(data["amount"])
    with transaction.atomic():
        record, created = EmailSent.objects.get_or_create(
            event_id=event_id,
            defaults={"order_id": order_id, "user_id": user_id, "amount": amount},
        )
        if created:
            # Stand-in for the mail gateway: the record commits with the "send".
            log.info("email sent: order %s for user %s (%s)", order_id, user_id, amount)
    return record, created
