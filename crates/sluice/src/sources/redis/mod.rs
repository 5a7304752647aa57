//! The `redis` source: Laravel's Redis queue, consumed as
//! `php artisan queue:work redis` consumes it, so sluice and PHP workers
//! can share one queue.
//!
//! ```toml
//! [pipeline.source]
//! type = "redis"
//! url = "redis://127.0.0.1:6379/0"
//! queue = "reports"
//! prefix = "laravel_database_"   # the app's `database.redis.options.prefix`
//! retry_after_secs = 90          # the connection's `retry_after`
//! ```
//!
//! - **TLS**: `url = "rediss://..."`, the server's certificate checked
//!   against the system's roots or `tls_ca_file` (rustls).
//! - **Keys and scripts** are Laravel's ([`scripts`] lists them). Each
//!   receive first migrates what is due, as Laravel's `pop` does: delayed
//!   jobs whose time has come and reserved jobs whose reservation expired
//!   (a crashed consumer's, PHP's or sluice's) go back onto the list. It
//!   then pops up to `max` jobs in one script call, incrementing each
//!   one's `attempts` inside the script and keeping the reserved copy
//!   verbatim: delete, release and extend name the job by those bytes.
//! - **Waiting**: when the list is empty, a `BLPOP` on `:notify` for up to
//!   `block_for_secs` (less when a delayed job falls due sooner), then
//!   migrate and pop again.
//! - **Messages**: `body` is the job as it was pushed, Laravel's
//!   `getRawBody()` (what `failed_jobs` stores, and what a release puts
//!   back), so its `attempts` field counts the runs before this one;
//!   `attempt` is Laravel's `attempts()`, that count plus this run, as the
//!   reserved copy holds it; `id` is the payload's `uuid` (else `id`).
//! - **Settling**: ack and remove delete the reserved member (`ZREM`);
//!   retry is Laravel's release, into `:delayed` at now + delay, counted
//!   as an attempt; release at shutdown puts the job as it was before the
//!   pop back at the head of the list, so it runs next and this attempt is
//!   not counted (see [`scripts::RELEASE`]); extend moves the reserved
//!   member's score to now + lease while it is still reserved
//!   (`ZADD XX`), so a long job is never handed to a second worker.
//! - **Ordering**: with `ordering_key` set, jobs with the same key run
//!   one at a time, in list order, in this process; their retries then
//!   wait in process (holding the key) rather than in `:delayed`, which
//!   would let the jobs behind them run first. Other consumers of the
//!   queue know nothing of keys.
//! - **Dead letters** are pushed as JSON records to the list
//!   `dead_letter_list`, unless the pipeline names a target of its own:
//!   `[pipeline.dead_letter] type = "failed_jobs"` writes the row Laravel's
//!   worker writes ([`crate::dead_letters::failed_jobs`]), so
//!   `queue:failed` lists the job and `queue:retry` re-queues it.
//! - **Backlog**: the list's length (ready jobs; not the delayed or
//!   reserved ones, as Laravel's `pendingSize`), read at each receive.
//! - **`--stop-when-empty`** ends the run once the list, `:delayed` and
//!   `:reserved` are all empty and every job received is settled: it
//!   waits for delayed jobs and for other consumers' reservations.
//! - **Connection loss**: commands fail as transient errors while the
//!   connection manager reconnects with exponential backoff; the runtime
//!   retries the receive. A settlement (delete, release, extend's
//!   siblings) is tried again for up to about 15 s, which rides out a
//!   Redis restart: each is idempotent (`ZREM` of the member, scripts that
//!   act only while the job is still reserved), so a command whose reply
//!   was lost is safe to repeat. One that still fails leaves the job
//!   reserved, to come back after `retry_after_secs`.

mod acker;
mod config;
pub mod scripts;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::task::JoinHandle;

use super::{
    Backlog, Capabilities, DeadLetterTarget, Delivery, Message, Received, Source, SourceContext,
    SourceError,
};
use acker::{DeadLetterList, RedisAcker, Shared, delete_batcher, error, now_secs, score_in};
pub use config::RedisSourceConfig;
use scripts::{Keys, MIGRATE, POP};

/// The fields of a payload the source reads itself.
/// (Small values as `Value`s: an untagged enum would trip over
/// serde_json's arbitrary-precision numbers.)
#[derive(Default, serde::Deserialize)]
struct Head {
    #[serde(default)]
    uuid: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "lenient_u64")]
    attempts: Option<u64>,
}

/// `attempts` when it is a whole number, else none (not an error: the
/// job still runs, counted from 1).
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::Deserialize;
    Ok(serde_json::Value::deserialize(d)?.as_u64())
}

/// A job as the pop script returned it.
struct Popped {
    original: Bytes,
    reserved: Bytes,
}

/// One fetch (migrate, pop, maybe wait) running in a task of its own, so
/// that a receive dropped mid-way loses nothing: the next receive, or
/// `close`, collects what it popped. `None`: drained, under
/// `--stop-when-empty`.
type Fetch = JoinHandle<Result<Option<Vec<Popped>>, SourceError>>;

/// The running source.
pub struct RedisSource {
    shared: Arc<Shared>,
    /// A second connection for the blocking wait, which would hold up every
    /// command behind it on a shared one.
    blocking: ConnectionManager,
    retry_after: Duration,
    block_for: Duration,
    ordering_key: Option<String>,
    max_body: u64,
    fetch: Option<Fetch>,
    /// Set while the fetch waits in `BLPOP`, holding no job: `close` then
    /// stops it at once.
    waiting: Arc<AtomicBool>,
    stop_when_empty: bool,
    dead_letters: Arc<DeadLetterList>,
    backlog: Arc<Backlog>,
}

impl std::fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSource")
            .field("queue", &self.shared.keys.queue)
            .finish_non_exhaustive()
    }
}

/// A client for `url`: `rediss://` over TLS (rustls), trusting the PEM
/// certificates in `ca_file` when given, else the system's roots.
pub fn client(url: &str, ca_file: Option<&std::path::Path>) -> Result<redis::Client, String> {
    if url.starts_with("rediss://") {
        // Two crypto providers are compiled in (ring, aws-lc-rs), so rustls
        // has no default of its own; an error means one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    match ca_file {
        None => redis::Client::open(url).map_err(|e| e.to_string()),
        Some(path) => {
            let root_cert = std::fs::read(path)
                .map_err(|e| format!("cannot read tls_ca_file `{}`: {e}", path.display()))?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
            .map_err(|e| e.to_string())
        }
    }
}

/// Connects with a reconnecting manager: exponential backoff from 100 ms
/// up to 5 s between attempts.
async fn connect(
    client: &redis::Client,
    response_timeout: Option<Duration>,
) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(5))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(response_timeout);
    ConnectionManager::new_with_config(client.clone(), config).await
}

impl RedisSource {
    /// Connects (two connections: commands, and the blocking wait).
    pub async fn open(
        cfg: &RedisSourceConfig,
        cx: &SourceContext,
    ) -> Result<RedisSource, SourceError> {
        let fatal = |e: redis::RedisError| {
            SourceError::fatal(format!(
                "cannot connect to Redis at `{}`: {e}; check url (host, port, password, db; percent-encode `@ : / # ?` in the password) and that the server runs",
                crate::redact::redact(&cfg.url)
            ))
        };
        let client = client(&cfg.url, cfg.tls_ca_file.as_deref()).map_err(|e| {
            SourceError::fatal(format!(
                "cannot use the Redis url `{}`: {e}",
                crate::redact::redact(&cfg.url)
            ))
        })?;
        let conn = connect(&client, Some(Duration::from_secs(10)))
            .await
            .map_err(fatal)?;
        let block_for = Duration::from_secs(cfg.block_for_secs);
        let blocking = connect(&client, Some(block_for + Duration::from_secs(5)))
            .await
            .map_err(fatal)?;
        let out = Arc::new(AtomicUsize::new(0));
        let (deletes, _deleter) = delete_batcher(conn.clone(), cfg.keys(), {
            let out = out.clone();
            // Every job handed out is settling: no delete is coming to wait for.
            Arc::new(move || out.load(Relaxed) == 0)
        });
        let shared = Arc::new(Shared {
            conn: conn.clone(),
            keys: cfg.keys(),
            out,
            deletes,
        });
        Ok(RedisSource {
            shared,
            blocking,
            retry_after: Duration::from_secs(cfg.retry_after_secs),
            block_for,
            ordering_key: cfg.ordering_key.clone(),
            max_body: cx.max_body_bytes,
            fetch: None,
            waiting: Arc::new(AtomicBool::new(false)),
            stop_when_empty: false,
            dead_letters: Arc::new(DeadLetterList {
                conn,
                key: cfg.dead_letter_key(),
            }),
            backlog: Arc::new(Backlog::new(&cx.pipeline)),
        })
    }

    fn start_fetch(&self, max: usize) -> Fetch {
        let shared = self.shared.clone();
        let mut blocking = self.blocking.clone();
        let (retry_after, block_for) = (self.retry_after, self.block_for);
        let backlog = self.backlog.clone();
        let (waiting, stop_when_empty) = (self.waiting.clone(), self.stop_when_empty);
        tokio::spawn(async move {
            let mut conn = shared.conn.clone();
            loop {
                migrate(&mut conn, &shared.keys).await?;
                let popped = pop(&mut conn, &shared.keys, retry_after, max).await?;
                let ready: u64 = conn
                    .llen(&shared.keys.queue)
                    .await
                    .map_err(|e| error("reading the queue's length (LLEN)", e))?;
                backlog.set(ready);
                if !popped.is_empty() {
                    return Ok(Some(popped));
                }
                let mut block_for = block_for;
                if stop_when_empty {
                    if drained(&mut conn, &shared).await? {
                        return Ok(None);
                    }
                    block_for = block_for.min(Duration::from_secs(1));
                }
                let wait = until_due(&mut conn, &shared.keys, block_for).await?;
                // A token means a job was pushed; the pop takes it (or
                // another consumer did). Either way, look again.
                waiting.store(true, Relaxed);
                let woken: Result<Option<(Vec<u8>, Vec<u8>)>, _> = redis::cmd("BLPOP")
                    .arg(&shared.keys.notify)
                    .arg(wait.as_secs_f64())
                    .query_async(&mut blocking)
                    .await;
                waiting.store(false, Relaxed);
                woken.map_err(|e| error("waiting for a job (BLPOP)", e))?;
            }
        })
    }

    fn delivery(&self, p: Popped) -> Delivery {
        // Only the fields this needs, without building the payload's tree
        // (the format decodes it once, later).
        let head: Head = serde_json::from_slice(&p.original).unwrap_or_default();
        let id = [head.uuid, head.id]
            .into_iter()
            .flatten()
            .find_map(|v| match v {
                serde_json::Value::String(s) if !s.is_empty() => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .unwrap_or_default();
        // Laravel's `attempts()`: the stored count plus this one, which is
        // what the reserved copy holds.
        let attempt = serde_json::from_slice::<Head>(&p.reserved)
            .ok()
            .and_then(|h| h.attempts)
            .map_or(1, |n| n.clamp(1, u64::from(u32::MAX)) as u32);
        let key = self.ordering_key.as_deref().and_then(|pointer| {
            let original: serde_json::Value = serde_json::from_slice(&p.original).ok()?;
            match original.pointer(pointer)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            }
        });
        let len = p.original.len() as u64;
        self.shared.out.fetch_add(1, Relaxed);
        Delivery::new(
            Message {
                id,
                body: p.original.clone(),
                attempt,
                oversize: (len > self.max_body).then_some(len),
                key,
                ..Message::default()
            },
            Box::new(RedisAcker {
                shared: self.shared.clone(),
                reserved: p.reserved,
                original: p.original,
                begun: AtomicBool::new(false),
            }),
        )
    }
}

/// Laravel's `migrate`: due delayed jobs, then expired reservations, back
/// onto the list.
async fn migrate(conn: &mut ConnectionManager, keys: &Keys) -> Result<(), SourceError> {
    let now = now_secs();
    for from in [&keys.delayed, &keys.reserved] {
        let _moved: i64 = MIGRATE
            .key(from)
            .key(&keys.queue)
            .key(&keys.notify)
            .arg(now)
            .arg(-1)
            .invoke_async(conn)
            .await
            .map_err(|e| error("migrating due jobs", e))?;
    }
    Ok(())
}

/// Pops up to `max` jobs, reserving them for `retry_after`.
async fn pop(
    conn: &mut ConnectionManager,
    keys: &Keys,
    retry_after: Duration,
    max: usize,
) -> Result<Vec<Popped>, SourceError> {
    let flat: Vec<Vec<u8>> = POP
        .key(&keys.queue)
        .key(&keys.reserved)
        .key(&keys.notify)
        .arg(score_in(retry_after))
        .arg(max.max(1))
        .invoke_async(conn)
        .await
        .map_err(|e| error("popping jobs", e))?;
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(original), Some(reserved)) = (it.next(), it.next()) {
        out.push(Popped {
            original: original.into(),
            reserved: reserved.into(),
        });
    }
    Ok(out)
}

/// Under `--stop-when-empty`: the queue holds nothing, in sight or out of
/// it (no job ready, delayed, or reserved by any consumer, this one
/// included), and this source has nothing out. Delayed jobs and other
/// consumers' reservations are waited for: they come back, or are deleted.
async fn drained(conn: &mut ConnectionManager, shared: &Shared) -> Result<bool, SourceError> {
    let k = &shared.keys;
    let (ready, delayed, reserved): (u64, u64, u64) = redis::pipe()
        .llen(&k.queue)
        .zcard(&k.delayed)
        .zcard(&k.reserved)
        .query_async(conn)
        .await
        .map_err(|e| error("reading the queue's size", e))?;
    Ok(ready + delayed + reserved == 0 && shared.out.load(Relaxed) == 0)
}

/// How long to wait for a push: `block_for`, or less when the earliest
/// delayed job falls due sooner (a retry a second away is not kept
/// waiting five); at least 10 ms.
async fn until_due(
    conn: &mut ConnectionManager,
    keys: &Keys,
    block_for: Duration,
) -> Result<Duration, SourceError> {
    let first: Vec<(Vec<u8>, f64)> = conn
        .zrange_withscores(&keys.delayed, 0, 0)
        .await
        .map_err(|e| error("reading the next delayed job (ZRANGE)", e))?;
    let wait = match first.first() {
        Some((_, due)) => Duration::from_secs_f64((due - now_secs()).clamp(0.01, 3600.0)),
        None => block_for,
    };
    Ok(wait.min(block_for))
}

impl Source for RedisSource {
    fn receive(&mut self, max: usize) -> BoxFuture<'_, Result<Received, SourceError>> {
        Box::pin(async move {
            let max = max.max(1);
            let fetch = match &mut self.fetch {
                Some(f) => f,
                None => self.fetch.insert(self.start_fetch(max)),
            };
            let result = fetch.await;
            self.fetch = None;
            let Some(popped) = result
                .map_err(|e| SourceError::fatal("the Redis fetch task failed").with_source(e))??
            else {
                return Ok(Received::End);
            };
            // A fetch left by a dropped receive was sized for that one:
            // hand back what this one cannot take.
            let mut deliveries: Vec<Delivery> =
                popped.into_iter().map(|p| self.delivery(p)).collect();
            let surplus = deliveries.split_off(deliveries.len().min(max));
            for d in surplus {
                d.acker.release().await?;
            }
            Ok(Received::Deliveries(deliveries))
        })
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            // A fetch still running may have popped jobs: give it a moment,
            // then hand them back. One that does not answer is dropped;
            // what it took comes back after retry_after.
            let Some(mut fetch) = self.fetch.take() else {
                return Ok(());
            };
            if self.waiting.load(Relaxed) {
                fetch.abort();
                return Ok(());
            }
            match tokio::time::timeout(Duration::from_secs(2), &mut fetch).await {
                Ok(Ok(Ok(Some(popped)))) => {
                    for p in popped {
                        self.delivery(p).acker.release().await?;
                    }
                }
                Ok(_) => {}
                Err(_) => fetch.abort(),
            }
            Ok(())
        })
    }

    fn pause(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        // Nothing would extend what a fetch under way pops while paused.
        self.close()
    }

    fn stop_when_empty(&mut self) {
        self.stop_when_empty = true;
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Keyed jobs retry in process, so the jobs behind them wait.
            delayed_retry: self.ordering_key.is_none(),
            lease: Some(self.retry_after),
        }
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterTarget>> {
        Some(self.dead_letters.clone())
    }

    fn backlog(&self) -> Option<Arc<Backlog>> {
        Some(self.backlog.clone())
    }
}

impl Drop for RedisSource {
    fn drop(&mut self) {
        if let Some(f) = &self.fetch {
            f.abort();
        }
    }
}
