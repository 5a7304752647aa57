//! Keeping an ordering key's order when a message goes back to the broker.
//!
//! The pool runs one message per key at a time, in the order received. When
//! one of them is retried through the broker (SQS FIFO: visibility set to
//! the backoff) or released, the messages of its key received after it
//! must not run before it comes back: they are handed back too, at once.
//! A key's mark lasts while any of its messages received so far is still
//! here; the next ones are received after the retried one returns.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub(super) struct Order {
    keys: Mutex<HashMap<String, Key>>,
}

#[derive(Debug, Default)]
struct Key {
    /// Messages of the key received and not done.
    here: usize,
    /// One of them went back to the broker unfinished.
    blocked: bool,
}

impl Order {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Key>) -> R) -> R {
        f(&mut self.keys.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(super) fn received(&self, key: &str) {
        self.with(|k| k.entry(key.to_owned()).or_default().here += 1);
    }

    pub(super) fn is_blocked(&self, key: &str) -> bool {
        self.with(|k| k.get(key).is_some_and(|s| s.blocked))
    }

    pub(super) fn block(&self, key: &str) {
        self.with(|k| {
            if let Some(s) = k.get_mut(key) {
                s.blocked = true;
            }
        });
    }

    pub(super) fn done(&self, key: &str) {
        self.with(|k| {
            if let Some(s) = k.get_mut(key) {
                s.here -= 1;
                if s.here == 0 {
                    k.remove(key);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_lasts_while_the_keys_messages_are_here() {
        let o = Order::default();
        o.received("g");
        o.received("g");
        o.block("g");
        assert!(o.is_blocked("g") && !o.is_blocked("h"));
        o.done("g");
        assert!(o.is_blocked("g"));
        o.done("g");
        o.received("g");
        assert!(!o.is_blocked("g"), "a message received later runs");
    }
}
