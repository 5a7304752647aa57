//! The keys of one Laravel Redis queue and the Lua scripts that move its
//! jobs between them, as `Illuminate\Queue\RedisQueue` and `LuaScripts`
//! lay them out:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}queues:{name}` | list | jobs ready to run, oldest first |
//! | `…:reserved` | sorted set | jobs running, scored by when their reservation expires (Unix seconds) |
//! | `…:delayed` | sorted set | jobs waiting, scored by when they are due (Unix seconds) |
//! | `…:notify` | list | one token per ready job, for a blocking wait (`block_for`) |
//!
//! Every script touches only the keys of one queue, which share a prefix
//! (and a hash tag, where the queue name carries one), so they run on a
//! Redis Cluster as on one server. Scores are written with millisecond
//! fractions: Laravel's own migration compares them with its whole-second
//! clock, so a job due at `100.4` moves for it at `101`.

use std::sync::LazyLock;

use redis::Script;

/// The key names of one queue.
#[derive(Clone, Debug)]
pub struct Keys {
    pub queue: String,
    pub reserved: String,
    pub delayed: String,
    pub notify: String,
}

impl Keys {
    /// The keys of queue `name` under the connection prefix `prefix`.
    pub fn new(prefix: &str, name: &str) -> Keys {
        let queue = format!("{prefix}queues:{name}");
        Keys {
            reserved: format!("{queue}:reserved"),
            delayed: format!("{queue}:delayed"),
            notify: format!("{queue}:notify"),
            queue,
        }
    }
}

/// Pops up to `ARGV[2]` jobs, as Laravel's pop script pops one: each job
/// is taken from the head of the list, its `attempts` incremented inside
/// the script, and the re-encoded copy (the *reserved member*, kept
/// verbatim from here on: delete and release name it byte for byte) added
/// to `:reserved` scored `ARGV[1]` (now + `retry_after`); one notify token
/// is taken per job. Returns `[job, reserved, job, reserved, …]`.
///
/// Where Laravel's script fails half-way on a job that is not a JSON
/// object (the job is gone from the list by then, and lost), this one
/// reserves the job as it is, so that it reaches the pipeline and is
/// dead-lettered with a reason. A payload without `attempts` counts from 0.
///
/// KEYS: queue, reserved, notify. ARGV: expiry, count.
pub static POP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i = 1, tonumber(ARGV[2]) do
    local job = redis.call('lpop', KEYS[1])
    if not job then break end
    local ok, decoded = pcall(cjson.decode, job)
    local reserved = job
    if ok and type(decoded) == 'table' then
        decoded['attempts'] = (tonumber(decoded['attempts']) or 0) + 1
        reserved = cjson.encode(decoded)
    end
    redis.call('zadd', KEYS[2], ARGV[1], reserved)
    redis.call('lpop', KEYS[3])
    out[#out + 1] = job
    out[#out + 1] = reserved
end
return out
",
    )
});

/// Laravel's `migrateExpiredJobs`: moves the members of a sorted set
/// (`:delayed`, `:reserved`) scored at or before `ARGV[1]` onto the end of
/// the list, at most `ARGV[2]` of them (negative: all), in chunks of 100,
/// with a notify token for each. Returns how many moved.
///
/// KEYS: from, queue, notify. ARGV: now, limit.
pub static MIGRATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local val = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'limit', 0, ARGV[2])
if next(val) ~= nil then
    redis.call('zremrangebyrank', KEYS[1], 0, #val - 1)
    for i = 1, #val, 100 do
        local last = math.min(i + 99, #val)
        redis.call('rpush', KEYS[2], unpack(val, i, last))
        for j = i, last do
            redis.call('rpush', KEYS[3], 1)
        end
    end
end
return #val
",
    )
});

/// Laravel's release (`deleteAndRelease`): the reserved member leaves
/// `:reserved` and waits in `:delayed` until `ARGV[2]`, attempts counted
/// as they are. Unlike Laravel's, it adds the job only if it was still
/// reserved: one whose reservation expired and was migrated (so another
/// consumer may run it) is not duplicated. Returns 1 if it was reserved.
///
/// KEYS: delayed, reserved. ARGV: reserved member, due.
pub static RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('zrem', KEYS[2], ARGV[1]) == 1 then
    redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
    return 1
end
return 0
",
    )
});

/// Hands a job back as if it had never been popped: the reserved member
/// leaves `:reserved` and the job as it stood in the list before the pop
/// (`ARGV[2]`, attempts not incremented) goes back to the head of the
/// list, with its notify token, so it runs next and this run's attempt is
/// not counted. Laravel has no such call (its worker, stopped, lets the
/// reservation expire); the state it leaves is the one before the pop.
/// Only if still reserved, as [`RETRY`]. Returns 1 if it was.
///
/// KEYS: queue, reserved, notify. ARGV: reserved member, original job.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('zrem', KEYS[2], ARGV[1]) == 1 then
    redis.call('lpush', KEYS[1], ARGV[2])
    redis.call('rpush', KEYS[3], 1)
    return 1
end
return 0
",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_laravel() {
        let k = Keys::new("laravel_database_", "reports");
        assert_eq!(k.queue, "laravel_database_queues:reports");
        assert_eq!(k.reserved, "laravel_database_queues:reports:reserved");
        assert_eq!(k.delayed, "laravel_database_queues:reports:delayed");
        assert_eq!(k.notify, "laravel_database_queues:reports:notify");
        let k = Keys::new("", "{reports}");
        assert_eq!(k.reserved, "queues:{reports}:reserved");
    }

    /// Redis Cluster hashes only the first `{...}` of a key: with the
    /// queue named `{reports}`, as Laravel's docs say for a cluster, every
    /// key of the queue (prefix or not) hashes on `reports`, so each
    /// script's keys share a slot.
    #[test]
    fn a_hash_tag_in_the_queue_name_puts_its_keys_in_one_slot() {
        fn hashed(key: &str) -> &str {
            match key.find('{') {
                Some(open) => match key[open + 1..].find('}') {
                    Some(len) if len > 0 => &key[open + 1..open + 1 + len],
                    _ => key,
                },
                None => key,
            }
        }
        for prefix in ["", "laravel_database_"] {
            let k = Keys::new(prefix, "{reports}");
            for key in [&k.queue, &k.reserved, &k.delayed, &k.notify] {
                assert_eq!(hashed(key), "reports", "{key}");
            }
        }
    }
}
