"""The order-service's own data: orders, the users it has heard of (a projection of users.v1,
never a read of the user-service's database), and its outbox."""

from django.db import models
from django.db.models import Q


class UserProjection(models.Model):
    """The latest state of each user, as users.v1 told it (a compacted topic: the latest event
    per user is all there is to know)."""

    user_id = models.UUIDField(primary_key=True)
    email = models.EmailField()
    name = models.CharField(max_length=200)
    last_event_id = models.CharField(max_length=64)
    updated_at = models.DateTimeField(auto_now=True)


class Order(models.Model):
    id = models.UUIDField(primary_key=True)
    user_id = models.UUIDField()
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    status = models.CharField(max_length=20, default="created")
    created_at = models.DateTimeField(auto_now_add=True)


class Outbox(models.Model):
    """The reference guide's outbox model (table `outbox`, the relay's default)."""

    id = models.BigAutoField(primary_key=True)
    topic = models.CharField(max_length=100)
    key = models.JSONField()
    payload = models.JSONField()
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "outbox"
        indexes = [
            models.Index(
                fields=["id"],
                name="outbox_unpublished",
                condition=Q(published_at__isnull=True),
            )
        ]
