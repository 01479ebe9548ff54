"""Against a real PostgreSQL: an order and its event row commit together or not at all; orders
for unknown users write nothing; users.v1 CloudEvents keep the projection."""

import json
import uuid
from decimal import Decimal

from django.db import transaction
from django.test import TestCase, TransactionTestCase
from ferry_shop.testing import visible_elsewhere

from .models import Order, Outbox, UserProjection
from .services import UnknownUser, create_order_and_enqueue

ADA = uuid.UUID("00000000-0000-4000-8000-00000000ada0")


def know_ada():
    UserProjection.objects.create(
        user_id=ADA, email="ada@example.com", name="Ada", last_event_id="e0"
    )


class OutboxTransaction(TransactionTestCase):
    def test_order_and_outbox_row_commit_together(self):
        know_ada()
        with transaction.atomic():
            create_order_and_enqueue(ADA, Decimal("12.50"))
            self.assertEqual(visible_elsewhere("orders_order"), 0)
            self.assertEqual(visible_elsewhere("outbox"), 0)
        self.assertEqual(visible_elsewhere("orders_order"), 1)
        self.assertEqual(visible_elsewhere("outbox"), 1)

    def test_rollback_leaves_neither_row(self):
        know_ada()

        class Abort(Exception):
            pass

        with self.assertRaises(Abort):
            with transaction.atomic():
                create_order_and_enqueue(ADA, Decimal("1"))
                raise Abort()
        self.assertEqual(visible_elsewhere("orders_order"), 0)
        self.assertEqual(visible_elsewhere("outbox"), 0)

    def test_an_unknown_user_writes_nothing(self):
        with self.assertRaises(UnknownUser):
            create_order_and_enqueue(uuid.uuid4(), Decimal("1"))
        self.assertEqual(visible_elsewhere("orders_order"), 0)
        self.assertEqual(visible_elsewhere("outbox"), 0)


def cloud_event(client, event_type, data, event_id=None):
    return client.post(
        "/events/users",
        json.dumps(data),
        content_type="application/json",
        headers={
            "ce-specversion": "1.0",
            "ce-id": event_id or str(uuid.uuid4()),
            "ce-type": event_type,
            "ce-source": "/ferry/topics/users.v1",
        },
    )


class Api(TestCase):
    def test_post_orders_for_a_known_user_writes_an_orders_v1_envelope(self):
        know_ada()
        response = self.client.post(
            "/orders",
            json.dumps({"user_id": str(ADA), "amount": "12.50"}),
            content_type="application/json",
        )
        self.assertEqual(response.status_code, 201, response.content)
        order_id = response.json()["id"]
        row = Outbox.objects.get()
        self.assertEqual(row.topic, "orders.v1")
        self.assertEqual(row.key, {"order_id": order_id})
        self.assertEqual(row.payload["event"], "order.created")
        self.assertEqual(
            row.payload["data"],
            {"order_id": order_id, "user_id": str(ADA), "amount": "12.50", "status": "created"},
        )

    def test_post_orders_for_an_unknown_user_is_refused(self):
        response = self.client.post(
            "/orders",
            json.dumps({"user_id": str(uuid.uuid4()), "amount": "5"}),
            content_type="application/json",
        )
        self.assertEqual(response.status_code, 422)
        self.assertEqual((Order.objects.count(), Outbox.objects.count()), (0, 0))

    def test_a_bad_amount_is_refused(self):
        know_ada()
        for amount in ["-1", "0", "lots", "NaN"]:
            response = self.client.post(
                "/orders",
                json.dumps({"user_id": str(ADA), "amount": amount}),
                content_type="application/json",
            )
            self.assertEqual(response.status_code, 400, amount)
        self.assertEqual(Outbox.objects.count(), 0)

    def test_user_events_fill_the_projection_and_redelivery_changes_nothing(self):
        data = {"user_id": str(ADA), "email": "ada@example.com", "name": "Ada"}
        for _ in range(2):
            response = cloud_event(self.client, "user.created", data, event_id="ev-1")
            self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(UserProjection.objects.get().email, "ada@example.com")
        cloud_event(self.client, "user.updated", {**data, "email": "ada@new.example"})
        self.assertEqual(UserProjection.objects.get().email, "ada@new.example")
        listed = self.client.get("/users").json()["users"]
        self.assertEqual([u["user_id"] for u in listed], [str(ADA)])

    def test_a_broken_user_event_is_a_permanent_failure(self):
        self.assertEqual(cloud_event(self.client, "user.created", {"email": "x"}).status_code, 400)
        no_headers = self.client.post("/events/users", "{}", content_type="application/json")
        self.assertEqual(no_headers.status_code, 400)
        self.assertEqual(UserProjection.objects.count(), 0)

    def test_unknown_event_types_are_acknowledged_and_ignored(self):
        response = cloud_event(self.client, "user.deleted.v2", {"user_id": str(ADA)})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(UserProjection.objects.count(), 0)
