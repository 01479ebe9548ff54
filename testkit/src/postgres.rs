//! PostgreSQL schemas that belong to one test.

use tokio_postgres::{Client, NoTls};

use crate::{TestEnv, cleanup::run_to_completion, unique_name};

/// The outbox table of DESIGN §4 (+ the optional `publish_error` column), as docs/outbox.md
/// recommends it: what the relay tests and the injection tests create in a [`TempSchema`].
pub const OUTBOX_SQL: &str = "
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    topic         text,
    key           jsonb,
    payload       jsonb,
    headers       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    publish_error text
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
";

/// A schema with a random name, dropped (with everything in it) when dropped. Clients from
/// [`TempSchema::connect`] have it first on their `search_path`, so unqualified table names in
/// the code under test land in it.
pub struct TempSchema {
    name: String,
    url: String,
}

impl TempSchema {
    /// Creates the schema.
    pub async fn create(env: &TestEnv) -> anyhow::Result<TempSchema> {
        let name = unique_name("test").replace('-', "_");
        let url = env.database_url().to_owned();
        let client = connect(&url).await?;
        client
            .batch_execute(&format!("CREATE SCHEMA \"{name}\""))
            .await?;
        Ok(TempSchema { name, url })
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A DSN whose sessions use this schema by default (`options=-csearch_path=...`).
    pub fn url(&self) -> String {
        self.url_on(&self.url)
    }

    /// The same DSN with another base: the server reached by another address (pods on the
    /// real node reach it at [`crate::RealNode::database_url`]).
    pub fn url_on(&self, base: &str) -> String {
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options=-csearch_path%3D{}", self.name)
    }

    /// A new connection whose `search_path` is this schema.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        connect(&self.url()).await
    }
}

/// Connects and drives the connection in the background.
async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test database connection ended: {e}");
        }
    });
    Ok(client)
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        let url = self.url.clone();
        run_to_completion(async move {
            let dropped = async {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await
            };
            if let Err(e) = dropped.await {
                eprintln!("could not drop test schema {name}: {e}");
            }
        });
    }
}
