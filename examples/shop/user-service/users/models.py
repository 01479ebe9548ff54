"""The user-service's own data: users, and the outbox the injected Ferry relay publishes."""

from django.db import models
from django.db.models import Q


class User(models.Model):
    id = models.UUIDField(primary_key=True)
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)


class Outbox(models.Model):
    """The reference guide's outbox model, as Ferry's relay reads it (docs/outbox.md): the
    table is `outbox`, the relay's default --outbox-table."""

    id = models.BigAutoField(primary_key=True)
    topic = models.CharField(max_length=100)
    key = models.JSONField()
    payload = models.JSONField()
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "outbox"
        # Keeps the relay's "what is unpublished" read an index probe (docs/outbox.md).
        indexes = [
            models.Index(
                fields=["id"],
                name="outbox_unpublished",
                condition=Q(published_at__isnull=True),
            )
        ]
