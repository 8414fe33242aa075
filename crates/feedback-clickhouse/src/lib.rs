//! Everything that speaks SQL: the connection (`Ch`), schema migrations and the metric views,
//! row types and batched inserts, what the sink has landed, and every other statement with its
//! typed rows (`queries`).
//!
//! Architecture invariant: only this crate writes SQL or uses the `clickhouse` crate (checked
//! by `tests/it/architecture.rs`), and every query names the database explicitly (tests use
//! fresh ones).

mod check;
pub mod errors;
pub mod migrations;
mod positions;
pub mod queries;
mod relayout;
pub mod rollups;
mod rows;
mod window;

use std::time::Duration;

pub use check::ColumnProblem;
use clickhouse::Client;
pub use positions::{Landed, RunningInsert};
pub use queries::watch::MetricRow;
pub use relayout::Relayout;
pub use rollups::{Rollup, RollupRow, ROLLUP_COLUMNS};
pub use rows::{
    DeadLetterRow, InteractionRow, ProgressRow, RatingRow, Row, DEAD_LETTER_COLUMNS,
    INTERACTION_COLUMNS, PROGRESS_COLUMNS, RATING_COLUMNS,
};
use serde::Deserialize;
pub use window::{UnknownWindow, Window};

/// Default HTTP endpoint and database (contract).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8123";
pub const DEFAULT_DATABASE: &str = "feedback";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ClickHouse at {url}: {source}")]
    Server {
        url: String,
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse at {url}: {error}")]
    Insert { url: String, error: String },
    #[error("invalid database name {0:?}: use letters, digits and _")]
    BadDatabase(String),
}

/// A database name is an identifier spliced into SQL: letters, digits and `_` only.
pub(crate) fn check_database(name: &str) -> Result<(), Error> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::BadDatabase(name.to_string()));
    }
    Ok(())
}

/// A row type [`Ch::insert`] can write: lets callers name the bound without depending on
/// the `clickhouse` crate.
pub trait InsertRow: clickhouse::Row + serde::Serialize {}

impl<T: clickhouse::Row + serde::Serialize> InsertRow for T {}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ChConfig {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
}

impl Default for ChConfig {
    fn default() -> Self {
        ChConfig {
            url: DEFAULT_URL.into(),
            database: DEFAULT_DATABASE.into(),
            user: "default".into(),
            password: String::new(),
        }
    }
}

/// A ClickHouse handle bound to one database.
#[derive(Clone)]
pub struct Ch {
    client: Client,
    url: String,
    db: String,
}

impl Ch {
    pub fn new(cfg: &ChConfig) -> Result<Self, Error> {
        check_database(&cfg.database)?;
        let client = Client::default()
            .with_url(&cfg.url)
            .with_user(&cfg.user)
            .with_password(&cfg.password)
            .with_compression(clickhouse::Compression::None);
        Ok(Ch {
            client,
            url: cfg.url.clone(),
            db: cfg.database.clone(),
        })
    }

    /// This handle with a ClickHouse setting sent with every statement (e.g.
    /// `use_uncompressed_cache`).
    pub fn with_setting(mut self, name: &str, value: &str) -> Self {
        self.client = self.client.with_option(name, value);
        self
    }

    pub fn database(&self) -> &str {
        &self.db
    }

    fn err(&self, source: clickhouse::error::Error) -> Error {
        Error::Server {
            url: self.url.clone(),
            source,
        }
    }

    /// Runs one statement (DDL or other) with `{db}` filled in.
    pub async fn execute(&self, sql: &str) -> Result<(), Error> {
        self.client
            .query(&migrations::render(sql, &self.db))
            .execute()
            .await
            .map_err(|e| self.err(e))
    }

    /// Runs a query with `{db}` filled in and returns the rows.
    pub async fn fetch<T: clickhouse::Row + for<'a> Deserialize<'a>>(
        &self,
        sql: &str,
    ) -> Result<Vec<T>, Error> {
        self.client
            .query(&migrations::render(sql, &self.db))
            .fetch_all::<T>()
            .await
            .map_err(|e| self.err(e))
    }

    /// A query of `sql` with `{db}` and the other placeholders filled in, for binding `?`s.
    pub(crate) fn query(&self, sql: &str) -> clickhouse::query::Query {
        self.client.query(&migrations::render(sql, &self.db))
    }

    /// Runs a query built by [`Ch::query`] and returns its rows.
    pub(crate) async fn fetch_query<T: clickhouse::Row + for<'a> Deserialize<'a>>(
        &self,
        q: clickhouse::query::Query,
    ) -> Result<Vec<T>, Error> {
        q.fetch_all::<T>().await.map_err(|e| self.err(e))
    }

    /// Runs a statement built by [`Ch::query`] that returns no rows.
    pub(crate) async fn execute_query(&self, q: clickhouse::query::Query) -> Result<(), Error> {
        q.execute().await.map_err(|e| self.err(e))
    }

    /// The server's version string.
    pub async fn server_version(&self) -> Result<String, Error> {
        #[derive(clickhouse::Row, Deserialize)]
        struct V {
            v: String,
        }
        let v: Vec<V> = self
            .client
            .query("SELECT version() AS v")
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        Ok(v.into_iter().next().map(|v| v.v).unwrap_or_default())
    }

    /// Applies every migration not yet recorded (or recorded as partial while the server now
    /// supports more of it). Returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<u32>, Error> {
        self.migrate_with(&|_| {}).await
    }

    /// [`Ch::migrate`], telling `progress` what a long step (a table's new layout) does.
    pub async fn migrate_with(
        &self,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Vec<u32>, Error> {
        self.execute("CREATE DATABASE IF NOT EXISTS {db}").await?;
        self.execute(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, applied_at DateTime) \
             ENGINE = MergeTree() ORDER BY version",
        )
        .await?;
        let server = migrations::parse_version(&self.server_version().await?);
        #[derive(clickhouse::Row, Deserialize)]
        struct Done {
            version: u32,
            name: String,
        }
        let done: Vec<Done> = self
            .fetch("SELECT version, name FROM {db}.schema_migrations")
            .await?;
        let mut applied = Vec::new();
        for m in migrations::MIGRATIONS {
            let records: Vec<&Done> = done.iter().filter(|d| d.version == m.version).collect();
            let full = records
                .iter()
                .any(|d| !d.name.contains(migrations::PARTIAL_MARK));
            let newly_supported = m.steps.iter().any(|s| match s.when {
                migrations::When::ServerAtLeast(a, b) => server >= (a, b),
                _ => false,
            });
            if full || (!records.is_empty() && !newly_supported) {
                continue;
            }
            for s in m.statements {
                self.execute(s).await?;
            }
            let mut skipped = Vec::new();
            for step in m.steps {
                match step.when {
                    migrations::When::ColumnMissing { table, column } => {
                        if self.has_column(table, column).await? {
                            continue;
                        }
                    }
                    migrations::When::ServerAtLeast(a, b) => {
                        if server < (a, b) {
                            skipped.push(format!("{a}.{b}"));
                            continue;
                        }
                    }
                    migrations::When::LayoutDiffers { table } => {
                        self.relayout(table, step.sql, progress).await?;
                        continue;
                    }
                }
                self.execute(step.sql).await?;
            }
            let mut name = m.name.to_string();
            if let Some(need) = skipped.first() {
                name.push_str(&format!(
                    "{}{} statement(s) need ClickHouse {need}+, server is {}.{}]",
                    migrations::PARTIAL_MARK,
                    skipped.len(),
                    server.0,
                    server.1
                ));
            }
            let name = name.replace('\\', "\\\\").replace('\'', "\\'");
            self.execute(&format!(
                "INSERT INTO {{db}}.schema_migrations (version, name, applied_at) VALUES ({}, '{name}', now())",
                m.version
            ))
            .await?;
            applied.push(m.version);
        }
        Ok(applied)
    }

    async fn has_column(&self, table: &str, column: &str) -> Result<bool, Error> {
        #[derive(clickhouse::Row, Deserialize)]
        struct N {
            n: u64,
        }
        let n: Vec<N> = self
            .client
            .query("SELECT count() AS n FROM system.columns WHERE database = ? AND table = ? AND name = ?")
            .bind(&self.db)
            .bind(table)
            .bind(column)
            .fetch_all()
            .await
            .map_err(|e| self.err(e))?;
        Ok(n.first().map(|n| n.n > 0).unwrap_or(false))
    }

    /// Inserts rows into `table` as one INSERT (RowBinary over HTTP): lands whole or not at all
    /// as long as the batch stays under `max_insert_block_size`.
    pub async fn insert<T: clickhouse::Row + serde::Serialize>(
        &self,
        table: &str,
        rows: &[T],
    ) -> Result<(), Error> {
        self.insert_as(table, rows.iter(), None).await
    }

    /// [`Ch::insert`] with a `query_id`, so that `system.processes` can tell whether an INSERT
    /// whose response was lost is still running.
    pub async fn insert_as<'a, T: clickhouse::Row + serde::Serialize + 'a>(
        &self,
        table: &str,
        rows: impl ExactSizeIterator<Item = &'a T>,
        query_id: Option<&str>,
    ) -> Result<(), Error> {
        if rows.len() == 0 {
            return Ok(());
        }
        let client = match query_id {
            Some(id) => self.client.clone().with_option("query_id", id),
            None => self.client.clone(),
        };
        let mut ins = client
            .insert(&format!("{}.{}", self.db, table))
            .map_err(|e| self.err(e))?
            .with_timeouts(Some(Duration::from_secs(30)), Some(Duration::from_secs(60)));
        for r in rows {
            ins.write(r).await.map_err(|e| self.err(e))?;
        }
        ins.end().await.map_err(|e| self.err(e))
    }
}

impl Ch {
    /// `feedback watch`'s metric read: [`queries::watch::metrics`].
    pub async fn metrics(&self, grain: &str) -> Result<Vec<MetricRow>, Error> {
        queries::watch::metrics(self, grain).await
    }
}
