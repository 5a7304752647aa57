//! `type = "failed_jobs"`: Laravel's failed-jobs table, in MySQL/MariaDB or
//! PostgreSQL, written as Laravel's `database-uuids` failed-job provider
//! writes it, so `php artisan queue:failed` lists sluice's failures beside
//! PHP's and `php artisan queue:retry` puts them back on the queue.
//!
//! ```toml
//! [pipeline.dead_letter]
//! type = "failed_jobs"
//! url = "mysql://app:${DB_PASSWORD}@db.internal:3306/app"  # or postgres://
//! table = "failed_jobs"          # `queue.failed.table`; default failed_jobs
//! # connection = "redis"         # default from the source: redis, sqs
//! # queue = "reports"            # default from the source
//! ```
//!
//! Each failed job is one row: `uuid` (the payload's, else a new one),
//! `connection` and `queue` (Laravel's names: `redis` and the queue's name,
//! `sqs` and the queue's URL, as its workers record them), `payload` (the
//! job as it was pushed, `getRawBody()`, which is what `queue:retry`
//! pushes back), `exception` (`Sluice\JobFailed: {reason}`, then the
//! pipeline and attempts), `failed_at` (UTC, to the second).
//!
//! - **Idempotent**: a job stored twice (sluice stopped after the insert,
//!   before removing the job from its queue, so it failed again) updates
//!   its row (`exception`, `failed_at`) rather than failing on the unique
//!   `uuid` — only when the row holds the same payload. A different
//!   payload under a uuid already taken (a producer that reuses uuids) is
//!   never dropped: it gets a row of its own under a uuid derived from
//!   both (the same one each time, so storing it again is idempotent too).
//! - **Checked at start**: the table must exist with Laravel's columns
//!   (`php artisan queue:failed-table && php artisan migrate` makes it);
//!   sluice creates nothing in the app's database.
//! - **Down database**: a store that fails is a transient error: the job
//!   goes back to its queue and comes round again; nothing is removed
//!   before its row is written.
//! - Laravel would also call the job's `failed()` method: PHP code sluice
//!   cannot run.

use std::time::Duration;

use chrono::Timelike as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::redact::redact;
use crate::sources::{DeadLetter, DeadLetterTarget, FieldError, SourceConfig, SourceError};

/// `[pipeline.dead_letter] type = "failed_jobs"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedJobsConfig {
    /// The app's database: `mysql://user:password@host:3306/db` (also
    /// `mariadb://`) or `postgres://user:password@host:5432/db`; TLS as
    /// the URL asks (`?ssl-mode=required`, `?sslmode=require`).
    pub url: String,
    /// The table: `queue.failed.table` in the app's config, optionally
    /// schema-qualified (`jobs.failed_jobs`). Default `failed_jobs`.
    #[serde(default = "default_table")]
    pub table: String,
    /// The queue connection's name in the row (`queue:retry` pushes the job
    /// back through the app's connection of that name). Default: the
    /// source's (`redis`, `sqs`).
    pub connection: Option<String>,
    /// The queue in the row. Default: the source's, as Laravel's worker
    /// records it (the name for Redis, the URL for SQS).
    pub queue: Option<String>,
}

fn default_table() -> String {
    "failed_jobs".into()
}

/// Which database the URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    MySql,
    Postgres,
}

impl FailedJobsConfig {
    /// A config for the table `failed_jobs` at `url`, names from the source.
    pub fn new(url: impl Into<String>) -> FailedJobsConfig {
        FailedJobsConfig {
            url: url.into(),
            table: default_table(),
            connection: None,
            queue: None,
        }
    }

    fn dialect(&self) -> Option<Dialect> {
        let scheme = self.url.split_once("://")?.0;
        match scheme.to_ascii_lowercase().as_str() {
            "mysql" | "mariadb" => Some(Dialect::MySql),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            _ => None,
        }
    }

    /// The row's connection and queue: the config's, else the source's.
    fn names(&self, source: &dyn SourceConfig) -> Result<(String, String), FieldError> {
        let defaults = source.laravel_queue();
        let connection = self
            .connection
            .clone()
            .or_else(|| defaults.as_ref().map(|d| d.0.clone()))
            .ok_or_else(|| {
                FieldError::new(
                    "connection",
                    "this source has no Laravel connection name: set connection = \"...\", \
                     the app's queue connection that queue:retry should push the jobs to",
                )
            })?;
        let queue = self
            .queue
            .clone()
            .or_else(|| defaults.map(|d| d.1))
            .ok_or_else(|| {
                FieldError::new(
                    "queue",
                    "this source has no Laravel queue name: set queue = \"...\"",
                )
            })?;
        Ok((connection, queue))
    }

    /// Checks what can be checked without connecting.
    pub fn check(&self, source: &dyn SourceConfig) -> Result<(), FieldError> {
        if self.dialect().is_none() {
            return Err(FieldError::new(
                "url",
                format!(
                    "`{}` is not a MySQL or PostgreSQL URL: write it like \
                     \"mysql://user:password@127.0.0.1:3306/app\" or \
                     \"postgres://user:password@127.0.0.1:5432/app\"",
                    redact(&self.url)
                ),
            ));
        }
        if !valid_table(&self.table) {
            return Err(FieldError::new(
                "table",
                format!(
                    "`{}` is not a table name sluice will put in SQL: letters, digits and \
                     underscores, optionally schema.table",
                    self.table
                ),
            ));
        }
        let (connection, queue) = self.names(source)?;
        if connection.is_empty() {
            return Err(FieldError::new(
                "connection",
                "empty: name the queue connection",
            ));
        }
        if queue.is_empty() {
            return Err(FieldError::new("queue", "empty: name the queue"));
        }
        Ok(())
    }

    /// Connects, and checks the table is there with Laravel's columns.
    pub async fn connect(&self, source: &dyn SourceConfig) -> Result<FailedJobs, SourceError> {
        let (connection, queue) = self
            .names(source)
            .map_err(|e| SourceError::fatal(format!("dead_letter.{}: {}", e.field, e.message)))?;
        let shown = redact(&self.url).into_owned();
        let cannot = |e: sqlx::Error| {
            SourceError::fatal(format!(
                "cannot connect to the failed_jobs database at `{shown}`: {e}; check url \
                 (host, port, user, password, database; percent-encode `@ : / # ?` in the \
                 password) and that the server runs"
            ))
        };
        let pool = match self.dialect() {
            Some(Dialect::MySql) => {
                // sqlx reads `mysql://` only.
                let url = match self.url.split_once("://") {
                    Some((_, rest)) => format!("mysql://{rest}"),
                    None => self.url.clone(),
                };
                Pool::MySql(options_mysql().connect(&url).await.map_err(cannot)?)
            }
            Some(Dialect::Postgres) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(&self.url)
                    .await
                    .map_err(cannot)?,
            ),
            None => return Err(SourceError::fatal("dead_letter.url: not a database URL")),
        };
        let target = FailedJobs {
            sql: pool.statements(&self.table),
            pool,
            table: self.table.clone(),
            shown,
            connection,
            queue,
        };
        target.probe().await?;
        Ok(target)
    }
}

fn options_mysql() -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
}

/// Letters, digits and underscores, not starting with a digit; at most one
/// `schema.` before.
fn valid_table(table: &str) -> bool {
    let ident = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    match table.split_once('.') {
        Some((schema, name)) => ident(schema) && ident(name),
        None => ident(table),
    }
}

/// `schema.table` quoted for the dialect (names are checked: no quotes
/// inside).
fn quote(table: &str, q: char) -> String {
    table
        .split('.')
        .map(|part| format!("{q}{part}{q}"))
        .collect::<Vec<_>>()
        .join(".")
}

enum Pool {
    MySql(MySqlPool),
    Postgres(PgPool),
}

impl Pool {
    /// The statements, `?`/`$n` placeholders as the database takes them:
    /// the payload under a uuid; a plain insert; the update of a row that
    /// holds the same payload.
    fn statements(&self, table: &str) -> Statements {
        match self {
            Pool::MySql(_) => {
                let t = quote(table, '`');
                Statements {
                    select: format!("SELECT `payload` FROM {t} WHERE `uuid` = ?"),
                    insert: format!(
                        "INSERT INTO {t} (`uuid`, `connection`, `queue`, `payload`, \
                         `exception`, `failed_at`) VALUES (?, ?, ?, ?, ?, ?)"
                    ),
                    update: format!(
                        "UPDATE {t} SET `exception` = ?, `failed_at` = ? WHERE `uuid` = ?"
                    ),
                }
            }
            Pool::Postgres(_) => {
                let t = quote(table, '"');
                Statements {
                    select: format!("SELECT \"payload\" FROM {t} WHERE \"uuid\" = $1"),
                    insert: format!(
                        "INSERT INTO {t} (\"uuid\", \"connection\", \"queue\", \"payload\", \
                         \"exception\", \"failed_at\") VALUES ($1, $2, $3, $4, $5, $6)"
                    ),
                    update: format!(
                        "UPDATE {t} SET \"exception\" = $1, \"failed_at\" = $2 WHERE \"uuid\" = $3"
                    ),
                }
            }
        }
    }
}

/// A target's three statements ([`Pool::statements`]).
#[derive(Debug)]
struct Statements {
    select: String,
    insert: String,
    update: String,
}

/// The uuid the `n`th payload that found `uuid` taken by another is
/// stored under: derived from both, so the same job gets the same one.
fn derived_uuid(uuid: &str, payload: &str, n: u32) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(uuid.as_bytes())
        .chain_update([0])
        .chain_update(payload.as_bytes())
        .chain_update(n.to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The running target: a small pool (failures are rare) and the insert.
pub struct FailedJobs {
    pool: Pool,
    sql: Statements,
    table: String,
    shown: String,
    connection: String,
    queue: String,
}

impl std::fmt::Debug for FailedJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedJobs")
            .field("table", &self.table)
            .field("database", &self.shown)
            .finish_non_exhaustive()
    }
}

/// One row, as Laravel's provider writes it.
#[derive(Debug)]
struct Row {
    uuid: String,
    payload: String,
    exception: String,
    failed_at: chrono::NaiveDateTime,
}

impl Row {
    fn new(letter: &DeadLetter<'_>) -> Row {
        let payload = String::from_utf8_lossy(&letter.message.body).into_owned();
        let uuid = serde_json::from_str::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| Some(v.get("uuid")?.as_str()?.to_owned()))
            .filter(|u| !u.is_empty() && u.len() <= 255)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let attempts = match letter.attempts {
            1 => "1 attempt".to_owned(),
            n => format!("{n} attempts"),
        };
        let exception = format!(
            "Sluice\\JobFailed: {}\nin sluice pipeline `{}`, after {attempts}",
            letter.reason, letter.pipeline
        );
        let now = chrono::Utc::now().naive_utc();
        let failed_at = now.with_nanosecond(0).unwrap_or(now);
        Row {
            uuid,
            payload,
            exception,
            failed_at,
        }
    }
}

impl FailedJobs {
    /// The table is there with Laravel's columns.
    async fn probe(&self) -> Result<(), SourceError> {
        let sql = format!(
            "SELECT uuid, connection, queue, payload, exception, failed_at FROM {} WHERE 1 = 0",
            match self.pool {
                Pool::MySql(_) => quote(&self.table, '`'),
                Pool::Postgres(_) => quote(&self.table, '"'),
            }
        );
        let result = match &self.pool {
            Pool::MySql(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .map(drop),
            Pool::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .map(drop),
        };
        result.map_err(|e| {
            SourceError::fatal(format!(
                "the table `{}` at `{}` is not Laravel's failed_jobs table ({e}): create it as \
                 the app does (`php artisan queue:failed-table && php artisan migrate`), with \
                 the columns uuid, connection, queue, payload, exception, failed_at, or set \
                 dead_letter.table",
                self.table, self.shown
            ))
        })
    }

    /// The payload stored under `uuid`, if a row has it.
    async fn payload_of(&self, uuid: &str) -> Result<Option<String>, sqlx::Error> {
        use sqlx::Row as _;
        let select = sqlx::AssertSqlSafe(self.sql.select.as_str());
        Ok(match &self.pool {
            Pool::MySql(p) => sqlx::query(select)
                .bind(uuid)
                .fetch_optional(p)
                .await?
                .map(|r| r.try_get::<String, _>(0))
                .transpose()?,
            Pool::Postgres(p) => sqlx::query(select)
                .bind(uuid)
                .fetch_optional(p)
                .await?
                .map(|r| r.try_get::<String, _>(0))
                .transpose()?,
        })
    }

    async fn insert(&self, uuid: &str, row: &Row) -> Result<(), sqlx::Error> {
        // One query for either database; sqlx's pools are typed by it.
        macro_rules! insert {
            ($pool:expr) => {
                sqlx::query(sqlx::AssertSqlSafe(self.sql.insert.as_str()))
                    .bind(uuid)
                    .bind(&self.connection)
                    .bind(&self.queue)
                    .bind(&row.payload)
                    .bind(&row.exception)
                    .bind(row.failed_at)
                    .execute($pool)
                    .await
                    .map(drop)
            };
        }
        match &self.pool {
            Pool::MySql(p) => insert!(p),
            Pool::Postgres(p) => insert!(p),
        }
    }

    async fn update(&self, uuid: &str, row: &Row) -> Result<(), sqlx::Error> {
        macro_rules! update {
            ($pool:expr) => {
                sqlx::query(sqlx::AssertSqlSafe(self.sql.update.as_str()))
                    .bind(&row.exception)
                    .bind(row.failed_at)
                    .bind(uuid)
                    .execute($pool)
                    .await
                    .map(drop)
            };
        }
        match &self.pool {
            Pool::MySql(p) => update!(p),
            Pool::Postgres(p) => update!(p),
        }
    }

    /// Stores `row`: a new row, or the update of the row that already
    /// holds this payload; a uuid taken by another payload moves this one
    /// to a derived uuid. The uuid it was stored under.
    async fn store_row(&self, row: &Row) -> Result<String, sqlx::Error> {
        let mut uuid = row.uuid.clone();
        // The uuids tried, in order, are the same for every copy of one
        // payload (the chain of derivations, not the rounds): two copies
        // stored at once meet on one row. A race with another insert of
        // the same uuid is met by reading again.
        let mut moved = 0u32;
        for _ in 0..16 {
            match self.payload_of(&uuid).await? {
                Some(p) if p == row.payload => {
                    self.update(&uuid, row).await?;
                    return Ok(uuid);
                }
                Some(_) => {
                    uuid = derived_uuid(&row.uuid, &row.payload, moved);
                    moved += 1;
                }
                None => match self.insert(&uuid, row).await {
                    Ok(()) => return Ok(uuid),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
                    Err(e) => return Err(e),
                },
            }
        }
        Err(sqlx::Error::Protocol(format!(
            "uuid {} and those derived from it are each taken by another payload",
            row.uuid
        )))
    }
}

impl DeadLetterTarget for FailedJobs {
    fn store<'a>(&'a self, letter: DeadLetter<'a>) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let row = Row::new(&letter);
            self.store_row(&row).await.map(drop).map_err(|e| {
                SourceError::transient(format!(
                    "storing the failed job {} in `{}` at `{}`: {e}",
                    row.uuid, self.table, self.shown
                ))
            })
        })
    }

    fn name(&self) -> String {
        format!("failed_jobs table `{}` at {}", self.table, self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_before_they_reach_sql() {
        for ok in ["failed_jobs", "jobs.failed_jobs", "_t1"] {
            assert!(valid_table(ok), "{ok}");
        }
        for bad in [
            "",
            "1t",
            "a.b.c",
            "t; DROP TABLE users",
            "t`x",
            "t\"x",
            "a.",
            ".a",
        ] {
            assert!(!valid_table(bad), "{bad}");
        }
        assert_eq!(quote("jobs.failed", '"'), "\"jobs\".\"failed\"");
        assert_eq!(quote("failed_jobs", '`'), "`failed_jobs`");
    }

    #[test]
    fn urls_name_the_dialect() {
        for (url, d) in [
            ("mysql://root@h/db", Some(Dialect::MySql)),
            ("MariaDB://root@h/db", Some(Dialect::MySql)),
            ("postgres://u@h/db", Some(Dialect::Postgres)),
            ("postgresql://u@h/db", Some(Dialect::Postgres)),
            ("sqlite://x.db", None),
            ("h:3306", None),
        ] {
            assert_eq!(FailedJobsConfig::new(url).dialect(), d, "{url}");
        }
    }

    #[test]
    fn rows_take_the_payloads_uuid_and_keep_it_verbatim() {
        let message = crate::sources::Message {
            body: bytes::Bytes::from_static(br#"{"uuid":"u-1","attempts":2}"#),
            ..Default::default()
        };
        let letter = DeadLetter {
            pipeline: "p",
            message: &message,
            attempts: 3,
            reason: "HTTP 500",
        };
        let row = Row::new(&letter);
        assert_eq!(row.uuid, "u-1");
        assert_eq!(row.payload, r#"{"uuid":"u-1","attempts":2}"#);
        assert!(
            row.exception.starts_with("Sluice\\JobFailed: HTTP 500\n"),
            "{}",
            row.exception
        );
        assert!(row.exception.contains("after 3 attempts"));
        assert_eq!(row.failed_at.nanosecond(), 0);
        // No uuid (a body that is not a Laravel job): a fresh one.
        let message = crate::sources::Message {
            body: bytes::Bytes::from_static(b"not json"),
            ..Default::default()
        };
        let letter = DeadLetter {
            message: &message,
            ..letter
        };
        let a = Row::new(&letter).uuid;
        assert_eq!(a.len(), 36);
        assert_ne!(a, Row::new(&letter).uuid);
    }
}
