"""Against a real PostgreSQL: one "email sent" record per event id however often the event
is delivered; unreadable events are refused as permanent failures."""

import json
import uuid

from django.test import TestCase

from .models import EmailSent

ORDER = {
    "order_id": "00000000-0000-4000-8000-0000000000a1",
    "user_id": "00000000-0000-4000-8000-00000000ada0",
    "amount": "12.50",
    "status": "created",
}


class OrderEvents(TestCase):
    def deliver(self, data, event_id="ev-1", event_type="order.created", attempt="1"):
        return self.client.post(
            "/events/orders",
            json.dumps(data),
            content_type="application/json",
            headers={
                "ce-specversion": "1.0",
                "ce-id": event_id,
                "ce-type": event_type,
                "ce-source": "/ferry/topics/orders.v1",
                "ferry-attempt": attempt,
            },
        )

    def test_a_redelivered_event_sends_one_email(self):
        first = self.deliver(ORDER)
        again = self.deliver(ORDER, attempt="2")
        self.assertEqual((first.status_code, again.status_code), (200, 200))
        self.assertEqual((first.json()["sent"], again.json()["sent"]), (True, False))
        self.assertEqual(EmailSent.objects.count(), 1)
        listed = self.client.get("/notifications").json()["emails_sent"]
        self.assertEqual([r["event_id"] for r in listed], ["ev-1"])

    def test_two_events_send_two_emails(self):
        self.deliver(ORDER, event_id="ev-1")
        self.deliver({**ORDER, "order_id": str(uuid.uuid4())}, event_id="ev-2")
        self.assertEqual(EmailSent.objects.count(), 2)

    def test_an_unreadable_event_is_a_permanent_failure(self):
        for poison in [{"order_id": "not-a-uuid", "user_id": ORDER["user_id"], "amount": "1"}, {}]:
            response = self.deliver(poison, event_id=str(uuid.uuid4()))
            self.assertEqual(response.status_code, 400, poison)
            self.assertIn("order.created", response.json()["error"])
        not_json = self.client.post(
            "/events/orders",
            "{",
            content_type="application/json",
            headers={"ce-id": "x", "ce-type": "order.created"},
        )
        self.assertEqual(not_json.status_code, 400)
        self.assertEqual(EmailSent.objects.count(), 0)

    def test_other_event_types_are_acknowledged_and_ignored(self):
        self.assertEqual(self.deliver(ORDER, event_type="order.shipped").status_code, 200)
        self.assertEqual(EmailSent.objects.count(), 0)
