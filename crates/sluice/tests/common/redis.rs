//! The machine's Redis, for the Redis source's tests.

/// `SLUICE_REDIS_URL`, else the Redis `scripts/services` starts.
pub fn url() -> String {
    std::env::var("SLUICE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A plain connection for setting up and inspecting queues; fails the test
/// loudly when Redis does not answer.
pub fn connection() -> redis::Connection {
    redis::Client::open(url())
        .unwrap()
        .get_connection()
        .expect("Redis runs at SLUICE_REDIS_URL or 127.0.0.1:6379 (scripts/services starts it)")
}
