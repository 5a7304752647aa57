//! A fault-injecting HTTP receiver for tests, benchmarks and the demo: a
//! real HTTP/1.1 server on loopback that answers after a latency drawn from
//! a range, and on request fails, throttles (429 + `Retry-After`), hangs or
//! drops connections. It records every request it answered.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use sluice::testkit::{Receiver, ReceiverConfig};
//! use std::time::Duration;
//!
//! let rx = Receiver::start(ReceiverConfig {
//!     latency: (Duration::from_millis(20), Duration::from_millis(50)),
//!     error_rate: 0.05,
//!     ..ReceiverConfig::default()
//! })
//! .await?;
//! println!("POST to {}/anything", rx.url());
//! # Ok(()) }
//! ```
//!
//! Paths `/status/<code>` always answer `<code>`. With `fail_first = n`,
//! the first `n` requests to each path answer `error_status`. Every 429
//! carries `Retry-After: retry_after_secs` (or `retry_after`, verbatim).
//! With `echo_headers`, every answer that is not a 2xx quotes the request's
//! headers in its body, as some servers' error pages do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How the receiver behaves. Rates are fractions of requests, 0.0 to 1.0.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Each answer waits a uniform random time in this range.
    pub latency: (Duration, Duration),
    /// Fraction answered with `error_status`.
    pub error_rate: f64,
    pub error_status: u16,
    /// Fraction answered 429 with `Retry-After: retry_after_secs`.
    pub throttle_rate: f64,
    pub retry_after_secs: u64,
    /// `Retry-After` sent verbatim instead of `retry_after_secs` (an HTTP
    /// date, `-1`, garbage).
    pub retry_after: Option<String>,
    /// Fraction never answered.
    pub hang_rate: f64,
    /// Fraction whose connection is dropped without an answer.
    pub reset_rate: f64,
    /// The first this-many requests to each path answer `error_status`.
    pub fail_first: u32,
    /// Keep every request (method, path, headers, body). Off for
    /// benchmarks.
    pub record: bool,
    /// Answers that are not a 2xx quote the request's headers in the body.
    pub echo_headers: bool,
}

impl Default for ReceiverConfig {
    fn default() -> ReceiverConfig {
        ReceiverConfig {
            latency: (Duration::ZERO, Duration::ZERO),
            error_rate: 0.0,
            error_status: 503,
            throttle_rate: 0.0,
            retry_after_secs: 1,
            retry_after: None,
            hang_rate: 0.0,
            reset_rate: 0.0,
            fail_first: 0,
            record: true,
            echo_headers: false,
        }
    }
}

/// One request the receiver answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The path as it came, percent-encoding and all.
    pub path: String,
    /// The query, as it came.
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The status sent back.
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    config: Mutex<ReceiverConfig>,
    requests: Mutex<Vec<Recorded>>,
    seen_by_path: Mutex<HashMap<String, u32>>,
    total: AtomicU64,
    accepted: AtomicU64,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    answered: Notify,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start(config: ReceiverConfig) -> std::io::Result<Receiver> {
        Receiver::bind("127.0.0.1:0".parse().expect("valid"), config).await
    }

    /// Starts on `addr`.
    pub async fn bind(addr: SocketAddr, config: ReceiverConfig) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            config: Mutex::new(config),
            ..State::default()
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(st.clone(), req));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Receiver { addr, state, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the behaviour for requests from now on.
    pub fn set_config(&self, config: ReceiverConfig) {
        *self.state.config.lock().expect("not poisoned") = config;
    }

    /// Every request answered so far (when recording).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("not poisoned").clone()
    }

    /// Requests answered with a 2xx.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Relaxed)
    }

    /// Requests received, answered or not.
    pub fn total(&self) -> u64 {
        self.state.total.load(Relaxed)
    }

    /// The most requests that were being answered at once.
    pub fn peak_in_flight(&self) -> usize {
        self.state.peak_in_flight.load(Relaxed)
    }

    /// Waits until at least `n` requests were answered with a 2xx.
    pub async fn wait_for_accepted(&self, n: u64) {
        loop {
            let notified = self.state.answered.notified();
            if self.accepted() >= n {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

type Reply = Response<Full<Bytes>>;

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Result<Reply, std::io::Error> {
    state.total.fetch_add(1, Relaxed);
    let now = state.in_flight.fetch_add(1, Relaxed) + 1;
    state.peak_in_flight.fetch_max(now, Relaxed);
    let _guard = InFlight(&state);
    let config = state.config.lock().expect("not poisoned").clone();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);

    let (lo, hi) = config.latency;
    let wait = if hi > lo {
        lo + (hi - lo).mul_f64(fastrand::f64())
    } else {
        lo
    };
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let roll = fastrand::f64();
    let mut edge = config.reset_rate;
    if roll < edge {
        return Err(std::io::Error::other("reset by the test receiver"));
    }
    edge += config.hang_rate;
    if roll < edge {
        std::future::pending::<()>().await;
    }
    let seen = if config.fail_first > 0 {
        let mut m = state.seen_by_path.lock().expect("not poisoned");
        let n = m.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    } else {
        0
    };
    let mut retry_after = None;
    let status = if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|c| c.get(..3)?.parse().ok())
    {
        code
    } else if seen > 0 && seen <= config.fail_first {
        config.error_status
    } else if roll < edge + config.throttle_rate {
        429
    } else if roll < edge + config.throttle_rate + config.error_rate {
        config.error_status
    } else {
        200
    };
    if status == 429 {
        retry_after = Some(
            config
                .retry_after
                .clone()
                .unwrap_or_else(|| config.retry_after_secs.to_string()),
        );
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let echoed = (config.echo_headers && !status.is_success()).then(|| {
        parts
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect::<String>()
    });
    if config.record {
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        state.requests.lock().expect("not poisoned").push(Recorded {
            method: parts.method.to_string(),
            path,
            query,
            headers,
            body,
            status: status.as_u16(),
        });
    }
    if status.is_success() {
        state.accepted.fetch_add(1, Relaxed);
    }
    state.answered.notify_waiters();
    let text = match status.as_u16() {
        200..=299 => "ok",
        429 => "slow down",
        _ => "test receiver says no",
    };
    let text = match echoed {
        Some(h) => format!("{text}; you sent:\n{h}"),
        None => text.to_owned(),
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    if let Some(v) = retry_after {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&v) {
            resp.headers_mut().insert("retry-after", v);
        }
    }
    Ok(resp)
}
