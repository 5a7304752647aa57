//! The `sluice` command line. Thin: every command lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sluice::config::{self, RunOptions};
use sluice::demo::{self, DemoConfig};
use sluice::runtime::{self, Progress, Shutdown};
use sluice::testkit::{Receiver, ReceiverConfig};

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Drain queues through I/O-heavy jobs, many in flight, acknowledging only after success"
)]
struct Cli {
    /// How log lines are written: `text` for people, `json` (one object per
    /// line) for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProgressArg {
    Auto,
    Bar,
    Log,
    Off,
}

impl From<ProgressArg> for Progress {
    fn from(p: ProgressArg) -> Progress {
        match p {
            ProgressArg::Auto => Progress::Auto,
            ProgressArg::Bar => Progress::Bar,
            ProgressArg::Log => Progress::Log,
            ProgressArg::Off => Progress::Off,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipelines of a config until their sources end or SIGTERM.
    ///
    /// Exit code 0: every job succeeded. 4: every message was settled, but
    /// some jobs failed for good and were dead-lettered. 3: some messages
    /// were handed back unsettled (a stop during a job or its backoff, the
    /// shutdown timeout, a forced stop), a settlement failed (an ack, a
    /// dead letter, the final checkpoint write) or a source failed. 1: the
    /// config or start-up failed.
    Run {
        /// The config file.
        #[arg(short, long)]
        config: PathBuf,
        /// How to show progress.
        #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
        progress: ProgressArg,
        /// Exit once every source is empty and nothing is in flight (like
        /// Laravel's `queue:work --stop-when-empty`).
        #[arg(long)]
        stop_when_empty: bool,
        /// Serve the admin server here (e.g. 127.0.0.1:9600; overrides the
        /// config's `[admin] listen`): the
        /// dashboard, the control API, /metrics, /healthz and /readyz. A
        /// non-loopback address needs SLUICE_ADMIN_TOKEN, which the control
        /// API then requires.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
    },
    /// Check a config without running it: exit 0 when it is valid.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the real pipeline on generated jobs against a local HTTP receiver.
    Demo {
        /// Jobs to run.
        #[arg(long, default_value_t = 100_000)]
        jobs: u64,
        /// Jobs in flight at once.
        #[arg(long, default_value_t = 1_000)]
        concurrency: usize,
        /// The receiver's latency, in ms: `20-50` or `20`.
        #[arg(long, default_value = "20-50")]
        latency_ms: String,
        /// Keep the generated files here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
        progress: ProgressArg,
        /// The admin server's address (dashboard, API, /metrics, /healthz,
        /// /readyz); any free port when this one is taken.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9600")]
        admin: SocketAddr,
    },
    /// Drive a running daemon's admin API: status, resize, pause, resume,
    /// failures.
    Ctl {
        /// The admin server (default: $SLUICE_ADMIN_URL, else
        /// http://127.0.0.1:9600). $SLUICE_ADMIN_TOKEN is sent as the
        /// bearer token when set.
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// Print the API's JSON answer as it came.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: sluice::admin::ctl::Request,
    },
    /// Push Laravel jobs to a Redis or SQS queue, as a Laravel app does.
    Send(Box<sluice::send::SendArgs>),
    /// Serve the fault-injecting test receiver (for benchmarks and trials).
    Receiver {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Latency in ms: `20-50` or `20`.
        #[arg(long, default_value = "20")]
        latency_ms: String,
        /// Fraction of requests answered 503.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Fraction answered 429 with Retry-After: 1.
        #[arg(long, default_value_t = 0.0)]
        throttle_rate: f64,
    },
}

/// glibc's allocator serialises on arena locks when one thread frees what
/// another allocated, which a request crossing tokio workers does all the
/// time; mimalloc does not (bench/e2e-file.sh: see BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn latency(s: &str) -> anyhow::Result<(Duration, Duration)> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let ms = |v: &str| -> anyhow::Result<Duration> {
        Ok(Duration::from_millis(v.trim().parse().with_context(
            || format!("`{s}` is not a latency like 20-50"),
        )?))
    };
    let (lo, hi) = (ms(lo)?, ms(hi)?);
    anyhow::ensure!(lo <= hi, "latency `{s}`: the low end is above the high end");
    Ok((lo, hi))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", sluice::redact::redact(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

/// Installs the metrics recorder and serves the admin routes at `addr`
/// (or, with `any_port_if_taken`, at a free port when it is taken).
async fn start_admin(
    addr: SocketAddr,
    any_port_if_taken: bool,
    allowed_hosts: Vec<String>,
) -> anyhow::Result<(Arc<sluice::admin::AdminState>, SocketAddr)> {
    let token = std::env::var("SLUICE_ADMIN_TOKEN").ok();
    if let Some(why) = sluice::admin::refusal(addr, token.as_deref()) {
        anyhow::bail!(why);
    }
    let handle = sluice::admin::install_recorder().map_err(anyhow::Error::msg)?;
    let state = Arc::new(
        sluice::admin::AdminState::new(Some(handle))
            .with_token(token)
            .with_allowed_hosts(allowed_hosts),
    );
    let served = match sluice::admin::serve(addr, state.clone()).await {
        Err(e) if any_port_if_taken && e.kind() == std::io::ErrorKind::AddrInUse => {
            sluice::admin::serve(SocketAddr::new(addr.ip(), 0), state.clone()).await
        }
        other => other,
    };
    let (bound, _server) = served.with_context(|| format!("--admin: listening on {addr}"))?;
    tracing::info!(address = %bound, "admin server: the dashboard at /, /api, /metrics, /healthz, /readyz");
    Ok((state, bound))
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let format = match cli.log_format {
        LogFormatArg::Text => sluice::telemetry::LogFormat::Text,
        LogFormatArg::Json => sluice::telemetry::LogFormat::Json,
    };
    sluice::telemetry::init_tracing("info", format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Local-file reads go through the blocking pool; keep it modest.
        .max_blocking_threads(16)
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Check { config } => {
                let loaded = config::load(&config)?;
                let names = loaded.check()?;
                println!(
                    "{}: ok ({} pipeline(s): {})",
                    config.display(),
                    names.len(),
                    names.join(", ")
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Run {
                config,
                progress,
                stop_when_empty,
                admin,
            } => {
                let loaded = config::load(&config)?;
                let admin = match admin.or(loaded.config.admin.listen) {
                    None => None,
                    Some(addr) => Some(
                        start_admin(addr, false, loaded.config.admin.allowed_hosts.clone())
                            .await?
                            .0,
                    ),
                };
                let shutdown = Shutdown::new();
                shutdown
                    .on_signals()
                    .context("listening for SIGTERM/SIGINT")?;
                let report = config::run(
                    &loaded,
                    RunOptions {
                        shutdown,
                        progress: progress.into(),
                        stop_when_empty,
                        admin,
                    },
                )
                .await?;
                eprintln!("{}", sluice::redact::redact(&runtime::summary(&report)));
                Ok(ExitCode::from(report.exit_code() as u8))
            }
            Command::Demo {
                jobs,
                concurrency,
                latency_ms,
                dir,
                progress,
                admin,
            } => {
                anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
                let (admin, bound) = start_admin(admin, true, Vec::new()).await?;
                eprintln!(
                    "admin server: http://{bound}/ (the dashboard; /api, /metrics, /healthz, /readyz; try sluice ctl --admin http://{bound} status)"
                );
                let shutdown = Shutdown::new();
                shutdown
                    .on_signals()
                    .context("listening for SIGTERM/SIGINT")?;
                let cfg = DemoConfig {
                    jobs,
                    concurrency,
                    latency: latency(&latency_ms)?,
                    dir,
                    progress: progress.into(),
                    admin: Some(admin),
                    ..DemoConfig::default()
                };
                let out = demo::run(&cfg, shutdown).await?;
                eprintln!("{}", sluice::redact::redact(&runtime::summary(&out.report)));
                eprintln!(
                    "the receiver accepted {} requests; the demo's config: {}",
                    out.delivered,
                    out.config_file.display()
                );
                let succeeded: u64 = out.report.pipelines.iter().map(|p| p.succeeded).sum();
                anyhow::ensure!(
                    out.delivered >= succeeded,
                    "the receiver accepted {} requests but {succeeded} jobs were acked",
                    out.delivered
                );
                Ok(ExitCode::from(out.report.exit_code() as u8))
            }
            Command::Ctl {
                admin,
                json,
                action,
            } => {
                let base = admin
                    .or_else(|| std::env::var("SLUICE_ADMIN_URL").ok())
                    .unwrap_or_else(|| "http://127.0.0.1:9600".into());
                let token = std::env::var("SLUICE_ADMIN_TOKEN").ok();
                let request = action;
                let answer = sluice::admin::ctl::send(&base, token.as_deref(), &request).await?;
                if json {
                    println!("{}", sluice::admin::ctl::printable(&format!("{answer:#}")));
                } else {
                    println!("{}", sluice::admin::ctl::render(&request, &answer));
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Send(args) => {
                sluice::send::send(*args).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Receiver {
                listen,
                latency_ms,
                error_rate,
                throttle_rate,
            } => {
                let rx = Receiver::bind(
                    listen,
                    ReceiverConfig {
                        latency: latency(&latency_ms)?,
                        error_rate,
                        throttle_rate,
                        record: false,
                        ..ReceiverConfig::default()
                    },
                )
                .await
                .with_context(|| format!("listening on {listen}"))?;
                eprintln!("test receiver listening on {}", rx.url());
                tokio::signal::ctrl_c()
                    .await
                    .context("waiting for Ctrl-C")?;
                eprintln!(
                    "answered {} requests ({} accepted)",
                    rx.total(),
                    rx.accepted()
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
