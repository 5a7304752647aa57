//! The source conformance suite (tests/conformance/mod.rs) on the Redis
//! source, against the Redis `scripts/services` starts on 127.0.0.1:6379
//! (`SLUICE_REDIS_URL` names another): a fresh Laravel queue per check,
//! its keys deleted afterwards. What is unsettled is what the queue's
//! list, `:reserved` and `:delayed` hold.
//!
//! Each seeded body goes in as a Laravel-style payload: the body's own
//! fields plus `uuid` and `attempts: 0`, which the pop script needs; the
//! handler reads the fields it looks at from the reserved payload as from
//! the body. The source reads it with `format = "json"` (the bodies are
//! not Laravel jobs), `retry_after_secs = 3` so a crashed consumer's jobs
//! come back soon, and `block_for_secs = 1`. With ordering keys seeded it
//! reads them at `/key` (and so retries in process).

mod common;
mod conformance;

use std::collections::HashMap;

use common::redis::{connection, url};
use redis::Commands;
use sluice::SourceContext;
use sluice::sources::Source;
use sluice::sources::SourceConfig;
use sluice::sources::redis::RedisSourceConfig;

struct RedisHarness {
    queue: String,
    keyed: bool,
    /// Seeded body by the uuid it was given.
    bodies: HashMap<String, String>,
}

impl RedisHarness {
    fn new() -> RedisHarness {
        RedisHarness {
            queue: String::new(),
            keyed: false,
            bodies: HashMap::new(),
        }
    }

    fn config(&self) -> RedisSourceConfig {
        let mut cfg = RedisSourceConfig::new(url(), &self.queue);
        cfg.prefix = "sluice_test_".into();
        cfg.retry_after_secs = 3;
        cfg.block_for_secs = 1;
        cfg.format = sluice::formats::Format::Json;
        if self.keyed {
            cfg.ordering_key = Some("/key".into());
        }
        cfg
    }
}

impl Drop for RedisHarness {
    fn drop(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let cfg = self.config();
        let k = cfg.keys();
        let _: Result<(), _> = connection().del(&[
            k.queue,
            k.reserved,
            k.delayed,
            k.notify,
            cfg.dead_letter_key(),
        ]);
    }
}

impl conformance::Harness for RedisHarness {
    async fn seed(&mut self, msgs: &[(String, Option<String>)]) {
        self.queue = format!("conformance-{}-{}", std::process::id(), fastrand::u64(..));
        self.keyed = msgs.iter().any(|m| m.1.is_some());
        let keys = self.config().keys();
        let mut conn = connection();
        for (i, (body, _key)) in msgs.iter().enumerate() {
            let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
            let uuid = format!("job-{i}");
            v["uuid"] = uuid.clone().into();
            v["attempts"] = 0.into();
            self.bodies.insert(uuid, body.clone());
            // Laravel's push: the job, then its notify token.
            let _: () = redis::pipe()
                .rpush(&keys.queue, v.to_string())
                .rpush(&keys.notify, 1)
                .query(&mut conn)
                .unwrap();
        }
    }

    async fn open(&self, concurrency: usize) -> Box<dyn Source> {
        let cx = SourceContext::new("conformance", concurrency);
        self.config().build(&cx).await.unwrap()
    }

    async fn unsettled(&self) -> usize {
        let k = self.config().keys();
        let mut conn = connection();
        let (list, reserved, delayed): (usize, usize, usize) = redis::pipe()
            .llen(&k.queue)
            .zcard(&k.reserved)
            .zcard(&k.delayed)
            .query(&mut conn)
            .unwrap();
        list + reserved + delayed
    }

    async fn dead_letters(&self) -> Vec<String> {
        let records: Vec<String> = connection()
            .lrange(self.config().dead_letter_key(), 0, -1)
            .unwrap();
        records
            .iter()
            .map(|r| {
                let record: serde_json::Value = serde_json::from_str(r).unwrap();
                let payload: serde_json::Value =
                    serde_json::from_str(record["payload"].as_str().unwrap()).unwrap();
                self.bodies[payload["uuid"].as_str().unwrap()].clone()
            })
            .collect()
    }
}

all_checks!(RedisHarness::new());
