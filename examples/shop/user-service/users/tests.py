"""The outbox guarantee, against a real PostgreSQL: a user and its event row commit together
(another session sees both or neither), and a rollback leaves neither."""

import json
import uuid
from unittest import mock

from django.db import connection, transaction
from django.test import TestCase, TransactionTestCase
from ferry_shop.testing import visible_elsewhere

from .models import Outbox, User
from .services import create_user_and_enqueue


class OutboxTransaction(TransactionTestCase):
    def test_user_and_outbox_row_commit_together(self):
        with transaction.atomic():
            create_user_and_enqueue(email="ada@example.com", name="Ada")
            # Written in this transaction, invisible to any other session until it commits.
            self.assertEqual(User.objects.count(), 1)
            self.assertEqual(Outbox.objects.count(), 1)
            self.assertEqual(visible_elsewhere("users_user"), 0)
            self.assertEqual(visible_elsewhere("outbox"), 0)
        self.assertEqual(visible_elsewhere("users_user"), 1)
        self.assertEqual(visible_elsewhere("outbox"), 1)

    def test_rollback_leaves_neither_row(self):
        class Abort(Exception):
            pass

        with self.assertRaises(Abort):
            with transaction.atomic():
                create_user_and_enqueue(email="bob@example.com", name="Bob")
                raise Abort()
        self.assertEqual(visible_elsewhere("users_user"), 0)
        self.assertEqual(visible_elsewhere("outbox"), 0)

    def test_a_failed_outbox_write_rolls_back_the_user(self):
        with mock.patch.object(Outbox.objects, "create", side_effect=RuntimeError("disk full")):
            with self.assertRaises(RuntimeError):
                create_user_and_enqueue(email="eve@example.com", name="Eve")
        self.assertEqual(visible_elsewhere("users_user"), 0)
        self.assertEqual(visible_elsewhere("outbox"), 0)


class UsersApi(TestCase):
    def post(self, body):
        return self.client.post("/users", json.dumps(body), content_type="application/json")

    def test_post_users_writes_the_user_and_a_users_v1_envelope(self):
        response = self.post({"email": "ada@example.com", "name": "Ada"})
        self.assertEqual(response.status_code, 201, response.content)
        user_id = response.json()["id"]
        row = Outbox.objects.get()
        self.assertEqual(row.topic, "users.v1")
        self.assertEqual(row.key, {"user_id": user_id})
        self.assertIsNone(row.published_at)
        env = row.payload
        self.assertEqual((env["schema"], env["event"]), ("users.v1", "user.created"))
        self.assertEqual(env["key"], {"user_id": user_id})
        self.assertEqual(
            env["data"], {"user_id": user_id, "email": "ada@example.com", "name": "Ada"}
        )
        uuid.UUID(env["id"])
        self.assertIsInstance(env["ts"], int)

    def test_a_duplicate_email_is_refused_without_an_event(self):
        self.assertEqual(self.post({"email": "ada@example.com", "name": "Ada"}).status_code, 201)
        self.assertEqual(self.post({"email": "ada@example.com", "name": "Ada 2"}).status_code, 409)
        self.assertEqual(User.objects.count(), 1)
        self.assertEqual(Outbox.objects.count(), 1)

    def test_a_malformed_request_is_refused(self):
        self.assertEqual(self.post({"email": "not-an-email", "name": "x"}).status_code, 400)
        self.assertEqual(self.post({"name": "x"}).status_code, 400)
        self.assertEqual(Outbox.objects.count(), 0)

    def test_the_outbox_table_is_what_the_relay_reads(self):
        with connection.cursor() as c:
            c.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'outbox'"
            )
            columns = dict(c.fetchall())
        self.assertEqual(columns["id"], "bigint")
        self.assertEqual(columns["key"], "jsonb")
        self.assertEqual(columns["payload"], "jsonb")
        self.assertEqual(columns["headers"], "jsonb")
        self.assertEqual(columns["created_at"], "timestamp with time zone")
        self.assertEqual(columns["published_at"], "timestamp with time zone")
        self.assertIn(columns["topic"], ("text", "character varying"))
