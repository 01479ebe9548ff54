"""The notification-service's own data: one "email sent" record per event id (the reference
guide's ProcessedMessage, with what was sent)."""

from django.db import models


class EmailSent(models.Model):
    # Unique: a re-delivered event finds its record and sends nothing twice.
    event_id = models.CharField(max_length=64, unique=True)
    order_id = models.UUIDField()
    user_id = models.UUIDField()
    amount = models.CharField(max_length=32)
    sent_at = models.DateTimeField(auto_now_add=True)
