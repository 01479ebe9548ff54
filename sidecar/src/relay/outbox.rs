//! The outbox table: checking its shape, reading unpublished rows and marking them.
//!
//! Rows are found by what is unpublished (`published_at IS NULL`), in id order, never by
//! `id > last_seen`: a transaction that commits late with a lower id is still found. Every
//! statement names exactly the rows it means (`id = ANY($1)`), so only rows whose delivery
//! Kafka confirmed are ever marked or deleted.

use std::time::Duration;

use tokio_postgres::{Client, Statement};

use super::error::{Error, Result};

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
    /// The type of [`ERROR_COLUMN`] as PostgreSQL prints it; reasons are cast to it (which
    /// cuts them to a `varchar(n)`'s length instead of failing the mark).
    pub error_column_type: String,
}

/// The types the relay reads each column as (the base type of a domain counts), as
/// PostgreSQL's `regtype` names them. `id` is read as `bigint` and ordered: its order must be
/// the insert order, which a serial or identity integer gives and a `uuid` does not.
const COLUMN_TYPES: [(&str, &[&str]); 8] = [
    ("id", &["bigint", "integer", "smallint"]),
    ("topic", &["text", "character varying", "character"]),
    ("key", &["jsonb", "json", "text", "character varying"]),
    ("payload", &["jsonb", "json", "text", "character varying"]),
    ("headers", &["jsonb", "json", "text", "character varying"]),
    (
        "created_at",
        &["timestamp with time zone", "timestamp without time zone"],
    ),
    (
        "published_at",
        &["timestamp with time zone", "timestamp without time zone"],
    ),
    (ERROR_COLUMN, &["text", "character varying"]),
];

/// One column as the shape check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Its type as PostgreSQL prints it (`integer`, `uuid`, `character varying(200)`).
    pub shown_type: String,
    /// The `regtype` name of its type, or of a domain's base type.
    pub base_type: String,
    /// Whether it is declared `NOT NULL`.
    pub not_null: bool,
}

/// What is wrong with the table's columns: the missing ones, and one line per column of a
/// type the relay cannot read. Pure, so every type PostgreSQL offers can be run through it.
pub fn column_problems(columns: &[Column]) -> (Vec<&'static str>, Vec<String>) {
    let missing: Vec<&'static str> = REQUIRED_COLUMNS
        .iter()
        .copied()
        .filter(|c| !columns.iter().any(|have| have.name == *c))
        .collect();
    let mut wrong = Vec::new();
    for column in columns {
        let Some((_, allowed)) = COLUMN_TYPES.iter().find(|(name, _)| *name == column.name) else {
            continue;
        };
        if !allowed.contains(&column.base_type.as_str()) {
            let hint = if column.name == "id" && column.base_type == "uuid" {
                ": uuids do not grow in insert order; add an integer id (bigserial or an identity column)"
            } else {
                ""
            };
            wrong.push(format!(
                "{} is {} (the relay needs {}){hint}",
                column.name,
                column.shown_type,
                allowed.join(", ")
            ));
        } else if column.name == "id" && !column.not_null {
            wrong.push("id may be NULL (the relay needs it NOT NULL, e.g. the primary key)".into());
        }
    }
    (missing, wrong)
}

/// Checks that `table` exists and has the contract's columns with types the relay can read,
/// naming what is missing or wrong.
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
    let columns: Vec<Column> = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                    (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END)::regtype::text, \
                    a.attnotnull \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oid],
        )
        .await
        .map_err(Error::Database)?
        .iter()
        .map(|r| Column {
            name: r.get(0),
            shown_type: r.get(1),
            base_type: r.get(2),
            not_null: r.get(3),
        })
        .collect();
    let (missing, wrong) = column_problems(&columns);
    if !missing.is_empty() {
        return Err(Error::MissingColumns {
            table: name,
            missing: missing.join(", "),
        });
    }
    if !wrong.is_empty() {
        return Err(Error::ColumnTypes {
            table: name,
            wrong: wrong.join("; "),
        });
    }
    let error_column = columns.iter().find(|c| c.name == ERROR_COLUMN);
    Ok(TableInfo {
        name,
        oid,
        has_error_column: error_column.is_some(),
        error_column_type: error_column.map_or_else(|| "text".into(), |c| c.shown_type.clone()),
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
                "SELECT id::int8, topic::text, key::text, payload::text, headers::text FROM {t} \
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
            format!("DELETE FROM {t} WHERE id = ANY($1::int8[])")
        } else {
            format!(
                "UPDATE {t} SET published_at = now() WHERE id = ANY($1::int8[]) AND published_at IS NULL"
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

    /// Makes this session's reads ordered index scans that stop after `LIMIT` rows, whatever
    /// the table's statistics say; for the session that reads, before its first read (its
    /// generic plans are built then, and again with these settings whenever PostgreSQL
    /// re-plans them).
    ///
    /// On a table created shortly before (no statistics yet, as a service's new outbox table
    /// is until autovacuum first analyzes it, a minute or more later), the read's generic
    /// plan was a bitmap heap scan of every entry of the partial index followed by a top-N
    /// sort: each read fetched the whole backlog and the entry of every row marked since the
    /// last vacuum (a bitmap scan never marks index entries dead), so a burst of 100,000 rows
    /// written while the relay ran drained in 11-38 s against 2-4 s pre-filled, fast only when
    /// autovacuum happened to analyze the table early (issue #20). Pricing bitmap scans and
    /// sorts out leaves the ordered index scan (the partial index, else the primary key) as
    /// the one cheap plan; it stops after `LIMIT` rows and marks the entries of rows dead to
    /// every snapshot as it passes them, so later reads skip them. Nothing is forbidden. The
    /// other sessions (marks by primary key, the backlog count, the retention sweep) keep
    /// PostgreSQL's own choice.
    pub async fn read_in_id_order(&self) -> Result<()> {
        self.client
            .batch_execute("SET enable_bitmapscan = off; SET enable_sort = off")
            .await
            .map_err(Error::Database)
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
                    "UPDATE {t} SET {ERROR_COLUMN} = u.reason::{ty} FROM unnest($1::bigint[], $2::text[]) AS u(id, reason) WHERE {t}.id = u.id",
                    t = self.table.name,
                    ty = self.table.error_column_type
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
