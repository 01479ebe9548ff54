//! The outbox table: checking its shape, reading unpublished rows and marking them.
//!
//! Rows are found by what is unpublished (`published_at IS NULL`), in id order, never by
//! `id > last_seen`: a transaction that commits late with a lower id is still found. Every
//! statement names exactly the rows it means (`id = ANY($1)`), so only rows whose delivery
//! Kafka confirmed are ever marked or deleted.

use std::time::Duration;

use tokio_postgres::{Client, Statement};

use super::{Error, Result};

/// Columns every outbox table has (DESIGN §4; a plain Django `Outbox` model's table).
pub const REQUIRED_COLUMNS: [&str; 7] = [
    "id",
    "topic",
    "key",
    "payload",
    "headers",
    "created_at",
    "published_at",
];

/// The optional column that receives the reason a row could not be published, when there is
/// no dead-letter topic (`publish_error text NULL`). Rows with a reason are skipped.
pub const ERROR_COLUMN: &str = "publish_error";

/// Rows deleted per statement by the retention sweep, so one sweep never holds long locks or
/// bloats one transaction on a big table.
const RETENTION_DELETE_CHUNK: i64 = 10_000;

/// One unpublished row, with the JSON columns as their text.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Primary key; the read and publish order.
    pub id: i64,
    /// Destination topic.
    pub topic: Option<String>,
    /// The `key` column as JSON text.
    pub key: Option<String>,
    /// The `payload` column as JSON text (the envelope).
    pub payload: Option<String>,
    /// The `headers` column as JSON text.
    pub headers: Option<String>,
}

/// What the shape check found out about the table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// The name as PostgreSQL prints it (quoted where needed), safe to put into SQL.
    pub name: String,
    /// The table's OID; with a Ferry prefix it is the advisory-lock key.
    pub oid: u32,
    /// Whether the table has [`ERROR_COLUMN`].
    pub has_error_column: bool,
}

/// Checks that `table` exists and has the contract's columns, naming what is missing.
pub async fn inspect(client: &Client, table: &str) -> Result<TableInfo> {
    let row = client
        .query_one(
            "SELECT to_regclass($1)::oid, to_regclass($1)::text",
            &[&table],
        )
        .await
        .map_err(Error::Database)?;
    let (Some(oid), Some(name)) = (
        row.get::<_, Option<u32>>(0),
        row.get::<_, Option<String>>(1),
    ) else {
        return Err(Error::NoTable(table.to_owned()));
    };
    let columns: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&oid],
        )
        .await
        .map_err(Error::Database)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .copied()
        .filter(|c| !columns.iter().any(|have| have == c))
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingColumns {
            table: name,
            missing: missing.join(", "),
        });
    }
    Ok(TableInfo {
        name,
        oid,
        has_error_column: columns.iter().any(|c| c == ERROR_COLUMN),
    })
}

/// The read query in four shapes, by whether keys are skipped and whether ids are excluded:
/// a skip list that is empty still costs a probe (and for keys a `key::text`) per row read,
/// and the common cases (nothing held; nothing in flight) need neither.
struct FetchStatements {
    plain: Statement,
    skip_keys: Statement,
    skip_ids: Statement,
    skip_both: Statement,
}

/// The outbox as one of the leader's sessions sees it, with its statements prepared.
pub struct Outbox {
    client: Client,
    table: TableInfo,
    fetch: FetchStatements,
    mark: Statement,
}

impl Outbox {
    /// Prepares the statements on `client`; `delete` marks by deleting.
    pub async fn prepare(client: Client, table: TableInfo, delete: bool) -> Result<Self> {
        // Generic plans: the skip lists are `NOT IN (SELECT unnest($n))`, a hashed subplan
        // built once per execution (on any PostgreSQL version), so no plan needs the arrays'
        // values. A custom plan re-plans every read, and estimating `<> ALL` over a constant
        // array of 1,000 ids took 2 ms on PostgreSQL 15, longer than executing the read.
        // Marks are durable when acknowledged even where the database runs with
        // `synchronous_commit = off`: a database crash then re-publishes at most the batch in
        // flight, not every mark of the last WAL writer delay. One WAL flush per batch.
        client
            .batch_execute("SET plan_cache_mode = force_generic_plan; SET synchronous_commit = on")
            .await
            .map_err(Error::Database)?;
        let t = &table.name;
        let skip_failed = if table.has_error_column {
            format!(" AND {ERROR_COLUMN} IS NULL")
        } else {
            String::new()
        };
        // Only the columns the relay sends, through the partial index on unpublished ids
        // (docs/outbox.md) in id order.
        let fetch = |skip_keys: Option<&str>, skip_ids: Option<&str>| {
            let mut sql = format!(
                "SELECT id, topic, key::text, payload::text, headers::text FROM {t} \
                 WHERE published_at IS NULL{skip_failed}"
            );
            if let Some(p) = skip_keys {
                sql.push_str(&format!(
                    " AND coalesce(topic, '') || chr(31) || coalesce(key::text, 'null') NOT IN (SELECT unnest({p}::text[]))"
                ));
            }
            if let Some(p) = skip_ids {
                sql.push_str(&format!(" AND id NOT IN (SELECT unnest({p}::bigint[]))"));
            }
            sql.push_str(" ORDER BY id LIMIT $1");
            sql
        };
        let fetch = FetchStatements {
            plain: prepare(&client, &fetch(None, None)).await?,
            skip_keys: prepare(&client, &fetch(Some("$2"), None)).await?,
            skip_ids: prepare(&client, &fetch(None, Some("$2"))).await?,
            skip_both: prepare(&client, &fetch(Some("$2"), Some("$3"))).await?,
        };
        let mark = if delete {
            format!("DELETE FROM {t} WHERE id = ANY($1)")
        } else {
            format!(
                "UPDATE {t} SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL"
            )
        };
        let mark = prepare(&client, &mark).await?;
        Ok(Self {
            client,
            table,
            fetch,
            mark,
        })
    }

    /// Starts listening for the opt-in trigger's `NOTIFY ferry_outbox`.
    pub async fn listen(&self) -> Result<()> {
        self.client
            .batch_execute("LISTEN ferry_outbox")
            .await
            .map_err(Error::Database)
    }

    /// Up to `limit` unpublished rows in id order, skipping the keys in `held` and the rows
    /// in `in_flight` (in Kafka or being marked while this chunk is read ahead).
    pub async fn fetch(
        &self,
        limit: u32,
        held: &[String],
        in_flight: &[i64],
    ) -> Result<Vec<OutboxRow>> {
        let limit = i64::from(limit);
        let f = &self.fetch;
        let query = match (held.is_empty(), in_flight.is_empty()) {
            (true, true) => self.client.query(&f.plain, &[&limit]).await,
            (false, true) => self.client.query(&f.skip_keys, &[&limit, &held]).await,
            (true, false) => self.client.query(&f.skip_ids, &[&limit, &in_flight]).await,
            (false, false) => {
                self.client
                    .query(&f.skip_both, &[&limit, &held, &in_flight])
                    .await
            }
        };
        let rows = query.map_err(Error::Database)?;
        Ok(rows
            .iter()
            .map(|r| OutboxRow {
                id: r.get(0),
                topic: r.get(1),
                key: r.get(2),
                payload: r.get(3),
                headers: r.get(4),
            })
            .collect())
    }

    /// Marks (or deletes) exactly the rows in `ids`, in one statement.
    pub async fn mark_published(&self, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.client
            .execute(&self.mark, &[&ids])
            .await
            .map_err(Error::Database)
    }

    /// Records why each row in `failures` cannot be published; the fetch skips them from then
    /// on. Needs [`ERROR_COLUMN`] (checked at start when there is no dead-letter topic).
    pub async fn mark_failed(&self, failures: &[(i64, String)]) -> Result<u64> {
        if failures.is_empty() {
            return Ok(0);
        }
        if !self.table.has_error_column {
            return Err(Error::NoErrorColumn(self.table.name.clone()));
        }
        let (ids, reasons): (Vec<i64>, Vec<&str>) =
            failures.iter().map(|(id, r)| (*id, r.as_str())).unzip();
        self.client
            .execute(
                &format!(
                    "UPDATE {t} SET {ERROR_COLUMN} = u.reason FROM unnest($1::bigint[], $2::text[]) AS u(id, reason) WHERE {t}.id = u.id",
                    t = self.table.name
                ),
                &[&ids, &reasons],
            )
            .await
            .map_err(Error::Database)
    }

    /// Deletes rows published longer than `age` ago; returns how many.
    pub async fn delete_published_before(&self, age: Duration) -> Result<u64> {
        let t = &self.table.name;
        let sql = format!(
            "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} \
             WHERE published_at < now() - make_interval(secs => $1) LIMIT $2)"
        );
        let mut total = 0;
        loop {
            let deleted = self
                .client
                .execute(&sql, &[&age.as_secs_f64(), &RETENTION_DELETE_CHUNK])
                .await
                .map_err(Error::Database)?;
            total += deleted;
            if deleted < RETENTION_DELETE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// The backlog: unpublished rows (not marked failed) and the age of the oldest, in seconds.
    pub async fn backlog(&self) -> Result<(i64, f64)> {
        let skip_failed = if self.table.has_error_column {
            format!(" AND {ERROR_COLUMN} IS NULL")
        } else {
            String::new()
        };
        let row = self
            .client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at))::float8, 0) \
                     FROM {} WHERE published_at IS NULL{skip_failed}",
                    self.table.name
                ),
                &[],
            )
            .await
            .map_err(Error::Database)?;
        Ok((row.get(0), row.get(1)))
    }
}

async fn prepare(client: &Client, sql: &str) -> Result<Statement> {
    client.prepare(sql).await.map_err(Error::Database)
}
