//! `sluice send`: hands jobs to Laravel. It pushes Laravel queue payloads,
//! written as Laravel's `Queue::createPayload` writes them, to a Redis
//! queue (as `RedisQueue::push`/`later` do) or an SQS queue (as
//! `SqsQueue` does), for a PHP worker, or for sluice, to run:
//!
//! ```text
//! # A job class, as ProcessReport::dispatch(42)->onQueue('reports') sends it:
//! sluice send --to redis --queue reports --prefix laravel_database_ \
//!     --command-json '{"__class": "App\\Jobs\\ProcessReport", "reportId": 42}'
//! # A serialized command as PHP wrote it, delayed 30 s:
//! sluice send --to sqs --queue-url "$QUEUE_URL" --delay 30 \
//!     --command 'O:22:"App\Jobs\ProcessReport":1:{s:8:"reportId";i:42;}'
//! # A string job, Queue::push('App\Handlers\Import@handle', $data), one per line of stdin:
//! jq -c '.[]' rows.json | sluice send --to redis --queue imports \
//!     --job 'App\Handlers\Import@handle' --stdin data
//! ```
//!
//! - **Payloads**: the fields and their order are Laravel's (8 and later):
//!   `uuid`, `displayName`, `job`, `maxTries`, `maxExceptions`,
//!   `failOnTimeout`, `backoff`, `timeout`, `retryUntil` (object jobs),
//!   `data`, then for Redis `id` and `attempts: 0`. The JSON is PHP's
//!   `json_encode(..., JSON_UNESCAPED_UNICODE)`: slashes escaped as `\/`,
//!   other text as is. An object job's `displayName` and `commandName`
//!   are the serialized command's class; `job` is
//!   `Illuminate\Queue\CallQueuedHandler@call`.
//! - **Commands**: `--command` (or `--command-file`, for a command with
//!   protected or private properties, whose names hold NUL bytes; or
//!   `--stdin command`, one a line) takes PHP `serialize()` output,
//!   checked by sluice's own reader (a command that does not parse is
//!   refused before anything is sent); `--command-json` writes it from JSON (public
//!   properties; the class's other properties keep their defaults when
//!   PHP reads it). Encrypted commands (`ShouldBeEncrypted`) are not
//!   written.
//! - **Retry rules** (`--tries`, `--backoff 10,30`, `--timeout`,
//!   `--retry-until`, `--max-exceptions`, `--fail-on-timeout`) go in the
//!   payload, where Laravel's worker and sluice read them.
//! - **Redis**: `RPUSH` onto `{prefix}queues:{queue}` with a token on
//!   `:notify`, in `MULTI` batches; with `--delay`, `ZADD` onto `:delayed`
//!   at now + delay (whole seconds, as Laravel's `availableAt`).
//!   **SQS**: `SendMessageBatch`, `DelaySeconds` for `--delay` (at most
//!   900, SQS's limit).
//! - **Output**: each job's uuid on stdout, one a line (`--print payload`
//!   prints the payload; `--print none` nothing), once its batch is
//!   pushed, and a count on stderr. A bad line of stdin stops the run: the
//!   jobs before it that were pushed are on stdout, the error says how
//!   many, and none after it is sent.

use std::io::{BufRead, Write};

use anyhow::{Context, bail, ensure};
use serde::Serialize;
use serde_json::Value as Json;

use crate::formats::php::{self, PhpValue};

/// Where `sluice send` pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Broker {
    /// Laravel's Redis queue.
    Redis,
    /// An SQS queue, as Laravel's `sqs` connection uses it.
    Sqs,
}

/// What each line of stdin is, with `--stdin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StdinHolds {
    /// A string job's data (JSON), for `--job`.
    Data,
    /// A serialized command, as PHP's `serialize()` writes it.
    Command,
    /// A command as JSON, as `--command-json` takes it.
    CommandJson,
}

/// What `sluice send` prints on stdout for each job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Print {
    Uuid,
    Payload,
    None,
}

/// `sluice send`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Where to push: a Laravel Redis queue or an SQS queue.
    #[arg(long, value_enum)]
    pub to: Broker,
    /// Redis: the server, `redis://[user:password@]host:port/db`.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub url: String,
    /// Redis with `rediss://`: the CA certificates (PEM) to trust instead
    /// of the system's.
    #[arg(long, value_name = "PEM")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Redis: the queue's name, as `onQueue('reports')` gives it.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// Redis: the app's key prefix (`database.redis.options.prefix`, e.g.
    /// `laravel_database_`).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// SQS: the queue's URL.
    #[arg(long)]
    pub queue_url: Option<String>,
    /// SQS: a custom endpoint, for emulators.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// SQS: the region (default from the standard chain, `AWS_REGION`...).
    #[arg(long)]
    pub region: Option<String>,
    /// A string job, `Class@method` (`Queue::push($job, $data)`).
    #[arg(long, value_name = "CLASS@METHOD")]
    pub job: Option<String>,
    /// The string job's data, as JSON. Default `""`, Laravel's.
    #[arg(long, value_name = "JSON", requires = "job")]
    pub data: Option<String>,
    /// An object job's command, as PHP's `serialize()` writes it.
    #[arg(long, value_name = "SERIALIZED", conflicts_with_all = ["job", "command_json"])]
    pub command: Option<String>,
    /// An object job's command, read from a file: a command with protected
    /// or private properties holds NUL bytes, which a command line cannot.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["job", "command", "command_json"])]
    pub command_file: Option<std::path::PathBuf>,
    /// An object job's command as JSON: `{"__class": "App\\Jobs\\X", "id": 1}`.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["job"])]
    pub command_json: Option<String>,
    /// One job for each line of stdin, which holds its data or command.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub stdin: Option<StdinHolds>,
    /// Send the job this many times (each with a uuid of its own).
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Make the jobs due this many seconds from now.
    #[arg(long, value_name = "SECONDS")]
    pub delay: Option<u64>,
    /// `maxTries`: attempts in all (0: unlimited).
    #[arg(long)]
    pub tries: Option<u32>,
    /// `backoff`: seconds before each retry, `10,30`.
    #[arg(long, value_name = "LIST")]
    pub backoff: Option<String>,
    /// `timeout`, in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// `retryUntil`: no retries after this Unix time.
    #[arg(long, value_name = "UNIX_TIME")]
    pub retry_until: Option<u64>,
    /// `maxExceptions`.
    #[arg(long)]
    pub max_exceptions: Option<u32>,
    /// `failOnTimeout`: a timed-out attempt fails the job for good.
    #[arg(long)]
    pub fail_on_timeout: bool,
    /// The payload's `uuid` (one job only), to reproduce a payload.
    #[arg(long, hide = true)]
    pub uuid: Option<String>,
    /// The Redis payload's `id` (one job only), to reproduce a payload.
    #[arg(long, hide = true)]
    pub id: Option<String>,
    /// What to print on stdout for each job sent.
    #[arg(long, value_enum, default_value_t = Print::Uuid)]
    pub print: Print,
}

/// Laravel's payload, its fields in Laravel's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    uuid: String,
    display_name: &'a str,
    job: &'a str,
    max_tries: Option<u32>,
    max_exceptions: Option<u32>,
    fail_on_timeout: bool,
    backoff: Option<&'a str>,
    timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_until: Option<Option<u64>>,
    data: Data<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Command {
        #[serde(rename = "commandName")]
        command_name: &'a str,
        command: &'a str,
    },
    Raw(&'a Json),
}

/// One job's body, before the payload is written round it.
enum Body {
    /// A serialized command and its class.
    Command { class: String, serialized: String },
    /// A string job's data.
    Data(Json),
}

/// `serialize()` output, checked: the class of the object it holds.
fn checked_command(text: &str) -> anyhow::Result<Body> {
    let value = php::unserialize(text.as_bytes()).map_err(|e| {
        anyhow::anyhow!(
            "the command is not PHP serialize() output ({e}): pass what serialize($job) \
             printed, or use --command-json"
        )
    })?;
    let Some(object) = value.as_object() else {
        bail!("the command is not a serialized object (`O:...`): a job is an object");
    };
    Ok(Body::Command {
        class: object.class.clone(),
        serialized: text.to_owned(),
    })
}

fn json_command(text: &str) -> anyhow::Result<Body> {
    let json: Json = serde_json::from_str(text).context("--command-json: not JSON")?;
    let value = PhpValue::from_json(&json).map_err(|e| anyhow::anyhow!("--command-json: {e}"))?;
    let class = value
        .as_object()
        .map(|o| o.class.clone())
        .unwrap_or_default();
    let serialized = String::from_utf8(php::serialize(&value))
        .context("--command-json: the command is not UTF-8")?;
    Ok(Body::Command { class, serialized })
}

fn data(text: &str) -> anyhow::Result<Body> {
    Ok(Body::Data(
        serde_json::from_str(text).context("the job's data is not JSON")?,
    ))
}

/// PHP's `json_encode(..., JSON_UNESCAPED_UNICODE)`: serde_json's output
/// with `/` escaped, and U+2028 and U+2029, which PHP escapes unless told
/// not to.
struct PhpJson;

impl serde_json::ser::Formatter for PhpJson {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut last = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '/' => "\\/",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[last..i])?;
            w.write_all(escaped.as_bytes())?;
            last = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[last..])
    }
}

fn php_json(value: &impl Serialize) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PhpJson);
    value
        .serialize(&mut ser)
        .expect("a payload serializes to JSON");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Laravel's `Str::random(32)`.
fn random_id() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(32)
        .collect()
}

impl SendArgs {
    fn check(&self) -> anyhow::Result<()> {
        let kinds = [
            self.job.is_some(),
            self.command.is_some(),
            self.command_file.is_some(),
            self.command_json.is_some(),
        ];
        let given = kinds.iter().filter(|k| **k).count();
        ensure!(
            given == 1 || (given == 0 && self.stdin.is_some()),
            "say what to send: --job CLASS@METHOD (with --data), --command SERIALIZED, \
             --command-file PATH, --command-json JSON, or --stdin command|command-json \
             (--stdin data with --job)"
        );
        match self.stdin {
            Some(StdinHolds::Data) => ensure!(
                self.job.is_some() && self.data.is_none(),
                "--stdin data needs --job (and takes each job's data from stdin, not --data)"
            ),
            Some(_) => ensure!(
                self.job.is_none(),
                "--stdin command/command-json sends object jobs: leave out --job"
            ),
            None => {}
        }
        if (self.uuid.is_some() || self.id.is_some()) && (self.count != 1 || self.stdin.is_some()) {
            bail!("--uuid and --id name one job: not with --count or --stdin");
        }
        if let Some(b) = &self.backoff {
            ensure!(
                !b.is_empty() && b.split(',').all(|s| s.trim().parse::<u64>().is_ok()),
                "--backoff `{b}`: write seconds, comma-separated, like 10,30"
            );
        }
        if let Some(d) = self.delay {
            ensure!(
                d <= MAX_DELAY_SECS,
                "--delay {d}: at most {MAX_DELAY_SECS} s (ten years); a larger one would wrap \
                 round to a time already past and run the job at once"
            );
        }
        match self.to {
            Broker::Redis => ensure!(!self.queue.is_empty(), "--queue: name the queue"),
            Broker::Sqs => {
                ensure!(
                    self.queue_url.is_some(),
                    "--to sqs needs --queue-url (the queue's URL)"
                );
                if let Some(d) = self.delay {
                    ensure!(d <= 900, "--delay {d}: SQS delays a message 900 s at most");
                }
            }
        }
        Ok(())
    }

    /// The payload for one job, and its uuid.
    fn payload(&self, body: &Body) -> (String, String) {
        let (display, job, data) = match body {
            Body::Command { class, serialized } => (
                class.as_str(),
                "Illuminate\\Queue\\CallQueuedHandler@call",
                Data::Command {
                    command_name: class,
                    command: serialized,
                },
            ),
            Body::Data(d) => {
                let job = self.job.as_deref().unwrap_or_default();
                (job.split('@').next().unwrap_or(job), job, Data::Raw(d))
            }
        };
        let redis = self.to == Broker::Redis;
        let uuid = self
            .uuid
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let payload = php_json(&Payload {
            uuid: uuid.clone(),
            display_name: display,
            job,
            max_tries: self.tries,
            max_exceptions: self.max_exceptions,
            fail_on_timeout: self.fail_on_timeout,
            backoff: self.backoff.as_deref(),
            timeout: self.timeout,
            // Object payloads carry it (null when unset); string ones do not.
            retry_until: matches!(body, Body::Command { .. }).then_some(self.retry_until),
            data,
            id: redis.then(|| self.id.clone().unwrap_or_else(random_id)),
            attempts: redis.then_some(0),
        });
        (uuid, payload)
    }

    /// The one body given on the command line.
    fn body(&self) -> anyhow::Result<Body> {
        if let Some(c) = &self.command {
            checked_command(c)
        } else if let Some(path) = &self.command_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--command-file {}", path.display()))?;
            // An editor's final newline is not part of the command.
            checked_command(text.strip_suffix('\n').unwrap_or(&text))
        } else if let Some(c) = &self.command_json {
            json_command(c)
        } else {
            Ok(Body::Data(match &self.data {
                Some(d) => serde_json::from_str(d).context("--data: not JSON")?,
                None => Json::String(String::new()),
            }))
        }
    }
}

/// The largest `--delay`: ten years.
const MAX_DELAY_SECS: u64 = 10 * 365 * 24 * 3600;

/// How long a partial batch of `--stdin` lines waits for more.
const STDIN_LINGER: std::time::Duration = std::time::Duration::from_millis(100);

/// Stdin's lines, read on a thread of their own (stdin has no async read
/// that a timeout can interrupt).
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// Sends the jobs; the number sent. Each job is printed (`--print`) once
/// its batch was pushed, so what stdout lists was sent; an error says how
/// many were sent before it.
pub async fn send(args: SendArgs) -> anyhow::Result<u64> {
    args.check()?;
    let mut sink = Sink::open(&args).await?;
    let mut out = Sent {
        print: args.print,
        count: 0,
    };
    let mut batch: Vec<(String, String)> = Vec::new();
    let result = async {
        match args.stdin {
            None => {
                let body = args.body()?;
                for _ in 0..args.count {
                    batch.push(args.payload(&body));
                    if batch.len() >= sink.batch() {
                        out.push(&mut sink, &mut batch).await?;
                    }
                }
            }
            Some(what) => {
                let mut lines = stdin_lines();
                let mut n = 0;
                loop {
                    // A partial batch goes out once no line came for a
                    // moment: a producer that writes a line now and then
                    // sees each job pushed, not held until EOF.
                    let line = if batch.is_empty() {
                        lines.recv().await
                    } else {
                        match tokio::time::timeout(STDIN_LINGER, lines.recv()).await {
                            Ok(line) => line,
                            Err(_) => {
                                out.push(&mut sink, &mut batch).await?;
                                continue;
                            }
                        }
                    };
                    let Some(line) = line else { break };
                    n += 1;
                    let line = line.context("reading stdin")?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let body = match what {
                        StdinHolds::Data => data(&line),
                        StdinHolds::Command => checked_command(&line),
                        StdinHolds::CommandJson => json_command(&line),
                    }
                    .with_context(|| format!("stdin line {n}"))?;
                    for _ in 0..args.count {
                        batch.push(args.payload(&body));
                    }
                    if batch.len() >= sink.batch() {
                        out.push(&mut sink, &mut batch).await?;
                    }
                }
            }
        }
        out.push(&mut sink, &mut batch).await
    }
    .await;
    match result {
        Ok(()) => {
            eprintln!("sent {} job(s) to {}", out.count, sink.name());
            Ok(out.count)
        }
        Err(e) => Err(e.context(format!(
            "{} job(s) were sent to {} before this (their uuids are on stdout); the rest were not",
            out.count,
            sink.name()
        ))),
    }
}

/// What has been sent, and printing it.
struct Sent {
    print: Print,
    count: u64,
}

impl Sent {
    /// Pushes `batch` (emptying it), then prints what it sent.
    async fn push(
        &mut self,
        sink: &mut Sink,
        batch: &mut Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let jobs = std::mem::take(batch);
        let (uuids, payloads): (Vec<String>, Vec<String>) = jobs.into_iter().unzip();
        self.count += sink.push(&payloads).await?;
        let mut out = std::io::stdout().lock();
        match self.print {
            Print::Uuid => uuids.iter().try_for_each(|u| writeln!(out, "{u}"))?,
            Print::Payload => payloads.iter().try_for_each(|p| writeln!(out, "{p}"))?,
            Print::None => {}
        }
        Ok(())
    }
}

#[cfg(feature = "redis")]
fn now_secs() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Where payloads go.
enum Sink {
    #[cfg(feature = "redis")]
    Redis {
        conn: redis::aio::MultiplexedConnection,
        keys: crate::sources::redis::scripts::Keys,
        delay: Option<u64>,
    },
    #[cfg(feature = "sqs")]
    Sqs {
        client: aws_sdk_sqs::Client,
        url: String,
        delay: Option<u64>,
    },
}

impl Sink {
    async fn open(args: &SendArgs) -> anyhow::Result<Sink> {
        match args.to {
            #[cfg(feature = "redis")]
            Broker::Redis => {
                let shown = crate::redact::redact(&args.url).into_owned();
                let client = crate::sources::redis::client(&args.url, args.tls_ca_file.as_deref())
                    .map_err(|e| anyhow::anyhow!("--url `{shown}`: {e}"))?;
                let conn = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    client.get_multiplexed_async_connection(),
                )
                .await
                .map_err(|_| anyhow::anyhow!("connecting to Redis at `{shown}`: timed out"))?
                .with_context(|| format!("connecting to Redis at `{shown}`"))?;
                Ok(Sink::Redis {
                    conn,
                    keys: crate::sources::redis::scripts::Keys::new(&args.prefix, &args.queue),
                    delay: args.delay,
                })
            }
            #[cfg(feature = "sqs")]
            Broker::Sqs => {
                let url = args.queue_url.clone().unwrap_or_default();
                let cfg: crate::sources::sqs::SqsSourceConfig =
                    serde_json::from_value(serde_json::json!({
                        "queue_url": url,
                        "region": args.region,
                        "endpoint": args.endpoint,
                    }))
                    .context("the SQS settings")?;
                Ok(Sink::Sqs {
                    client: crate::sources::sqs::client(&cfg).await,
                    url,
                    delay: args.delay,
                })
            }
            #[allow(unreachable_patterns)]
            other => bail!("this sluice was built without the {other:?} source's feature"),
        }
    }

    /// Jobs a push takes at most.
    fn batch(&self) -> usize {
        match self {
            #[cfg(feature = "redis")]
            Sink::Redis { .. } => 500,
            #[cfg(feature = "sqs")]
            Sink::Sqs { .. } => 10,
        }
    }

    fn name(&self) -> String {
        match self {
            #[cfg(feature = "redis")]
            Sink::Redis { keys, .. } => format!("redis list {}", keys.queue),
            #[cfg(feature = "sqs")]
            Sink::Sqs { url, .. } => url.clone(),
        }
    }

    /// Pushes a batch, as Laravel's push does each job.
    async fn push(&mut self, payloads: &[String]) -> anyhow::Result<u64> {
        let n = payloads.len() as u64;
        match self {
            #[cfg(feature = "redis")]
            Sink::Redis { conn, keys, delay } => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for p in payloads {
                    match delay {
                        Some(d) => {
                            pipe.zadd(&keys.delayed, p, now_secs() + *d).ignore();
                        }
                        None => {
                            pipe.rpush(&keys.queue, p)
                                .ignore()
                                .rpush(&keys.notify, 1)
                                .ignore();
                        }
                    }
                }
                let () = pipe
                    .query_async(conn)
                    .await
                    .with_context(|| format!("pushing to {}", keys.queue))?;
            }
            #[cfg(feature = "sqs")]
            Sink::Sqs { client, url, delay } => {
                let mut req = client.send_message_batch().queue_url(url.as_str());
                for (i, p) in payloads.iter().enumerate() {
                    let mut entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(p);
                    if let Some(d) = delay {
                        entry = entry.delay_seconds(*d as i32);
                    }
                    req = req.entries(entry.build().context("an SQS batch entry")?);
                }
                let out = req.send().await.map_err(|e| {
                    anyhow::anyhow!(
                        "sending to {url}: {}",
                        crate::sources::sqs::describe_error(&e)
                    )
                })?;
                if let Some(f) = out.failed().first() {
                    bail!(
                        "sending to {url}: SQS refused a message ({}: {}); {} of this batch \
                         of {n} may have been sent",
                        f.code(),
                        f.message().unwrap_or_default(),
                        out.successful().len()
                    );
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SendArgs,
    }

    fn args(line: &[&str]) -> SendArgs {
        let mut all = vec!["send"];
        all.extend_from_slice(line);
        Cli::try_parse_from(all).unwrap().args
    }

    #[test]
    fn payloads_are_laravels_field_for_field() {
        let a = args(&[
            "--to",
            "redis",
            "--command",
            r#"O:22:"App\Jobs\ProcessReport":1:{s:8:"reportId";i:42;}"#,
            "--uuid",
            "u-1",
            "--id",
            "abc",
        ]);
        a.check().unwrap();
        let (_, p) = a.payload(&a.body().unwrap());
        assert_eq!(
            p,
            r#"{"uuid":"u-1","displayName":"App\\Jobs\\ProcessReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","maxTries":null,"maxExceptions":null,"failOnTimeout":false,"backoff":null,"timeout":null,"retryUntil":null,"data":{"commandName":"App\\Jobs\\ProcessReport","command":"O:22:\"App\\Jobs\\ProcessReport\":1:{s:8:\"reportId\";i:42;}"},"id":"abc","attempts":0}"#
        );
        // A string job on SQS: no retryUntil, no id or attempts; PHP's
        // escaping of slashes.
        let a = args(&[
            "--to",
            "sqs",
            "--queue-url",
            "http://q",
            "--job",
            "App\\Handlers\\Import@handle",
            "--data",
            r#"{"url": "https://x/y", "n": 1.5, "t": "é\u2028"}"#,
            "--tries",
            "3",
            "--backoff",
            "10,30",
            "--uuid",
            "u-2",
        ]);
        a.check().unwrap();
        let (_, p) = a.payload(&a.body().unwrap());
        assert_eq!(
            p,
            r#"{"uuid":"u-2","displayName":"App\\Handlers\\Import","job":"App\\Handlers\\Import@handle","maxTries":3,"maxExceptions":null,"failOnTimeout":false,"backoff":"10,30","timeout":null,"data":{"n":1.5,"t":"é\u2028","url":"https:\/\/x\/y"}}"#
        );
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_sent() {
        for (line, says) in [
            (vec!["--to", "redis"], "say what to send"),
            (
                vec!["--to", "redis", "--command", "O:3:\"Foo\":1:{"],
                "not PHP serialize() output",
            ),
            (
                vec!["--to", "redis", "--command", "i:1;"],
                "not a serialized object",
            ),
            (
                vec!["--to", "redis", "--command-json", r#"{"id": 1}"#],
                "`__class`",
            ),
            (
                vec!["--to", "sqs", "--command-json", r#"{"__class": "A"}"#],
                "--queue-url",
            ),
            (
                vec![
                    "--to",
                    "sqs",
                    "--queue-url",
                    "u",
                    "--delay",
                    "901",
                    "--job",
                    "A@b",
                ],
                "900",
            ),
            (
                vec!["--to", "redis", "--job", "A@b", "--backoff", "10,x"],
                "--backoff",
            ),
            (
                vec![
                    "--to", "redis", "--job", "A@b", "--count", "2", "--uuid", "u",
                ],
                "--uuid",
            ),
            (
                vec!["--to", "redis", "--stdin", "data"],
                "--stdin data needs --job",
            ),
        ] {
            let a = args(&line);
            let e = a
                .check()
                .and_then(|()| a.body().map(drop))
                .expect_err(&format!("{line:?}"));
            assert!(format!("{e:#}").contains(says), "{line:?}: {e:#}");
        }
    }
}
