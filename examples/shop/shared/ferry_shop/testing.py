"""Test help: what another database session sees, to prove a domain row and its outbox row
become visible together (one transaction) or not at all."""

import psycopg
from django.db import connection


def visible_elsewhere(table: str) -> int:
    """Rows of `table` a separate session sees now (only committed rows)."""
    s = connection.settings_dict
    with psycopg.connect(
        dbname=s["NAME"],
        user=s["USER"] or None,
        password=s["PASSWORD"] or None,
        host=s["HOST"] or None,
        port=s["PORT"] or None,
        autocommit=True,
    ) as other:
        (count,) = other.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        return count
