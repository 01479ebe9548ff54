"""Writing a user: the domain row and its users.v1 event in one transaction (the outbox
pattern). Both commit, or neither does; Ferry's relay publishes the event afterwards."""

import uuid

from django.db import transaction
from ferry_shop.envelope import envelope

from .models import Outbox, User

TOPIC = "users.v1"


def create_user_and_enqueue(email: str, name: str, user_id: uuid.UUID | None = None) -> User:
    with transaction.atomic():
        user = User.objects.create(id=user_id or uuid.uuid4(), email=email, name=name)
        key = {"user_id": str(user.id)}
        Outbox.objects.create(
            topic=TOPIC,
            key=key,
            payload=envelope(
                schema=TOPIC,
                event="user.created",
                key=key,
                data={"user_id": str(user.id), "email": user.email, "name": user.name},
                source="user-service",
            ),
            headers={"source": "user-service"},
        )
    return user
