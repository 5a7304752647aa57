//! Which destinations keep idle connections open between requests.
//!
//! hyper's pool bounds idle connections per host, not in all, and a
//! templated host can name thousands (a webhook per customer domain): each
//! kept one idle connection until its timeout, past the open-files budget
//! (`concurrency x (1 + steps) + 256`), and connects then failed with
//! EMFILE. So at most [`MAX_DESTINATIONS`] destinations, the most recently
//! used, keep connections alive; a request to any other asks for
//! `Connection: close`, and its connection is closed once answered. A
//! destination leaves the set once unused for the pool's idle timeout.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Destinations that keep idle connections at once.
pub const MAX_DESTINATIONS: usize = 64;

/// How long an idle connection is kept (the client's pool idle timeout).
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Destinations keeping connections, with when each was last used.
static KEPT: LazyLock<Mutex<HashMap<String, Instant>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// True when a request to `destination` may leave its connection open
/// for the next one.
pub(super) fn keeps(destination: &str) -> bool {
    keeps_in(&KEPT, destination, Instant::now())
}

fn keeps_in(kept: &Mutex<HashMap<String, Instant>>, destination: &str, now: Instant) -> bool {
    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(used) = kept.get_mut(destination) {
        *used = now;
        return true;
    }
    if kept.len() >= MAX_DESTINATIONS {
        kept.retain(|_, used| now.duration_since(*used) < IDLE_TIMEOUT);
    }
    if kept.len() < MAX_DESTINATIONS {
        kept.insert(destination.to_owned(), now);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_so_many_destinations_keep_connections() {
        let kept = Mutex::new(HashMap::new());
        let t0 = Instant::now();
        for i in 0..MAX_DESTINATIONS {
            assert!(keeps_in(&kept, &format!("http://h{i}:80"), t0));
        }
        assert!(!keeps_in(&kept, "http://new:80", t0), "full");
        assert!(keeps_in(&kept, "http://h0:80", t0), "one kept stays kept");
        // Once the others have been idle for the timeout, their places go.
        let later = t0 + IDLE_TIMEOUT;
        assert!(keeps_in(&kept, "http://new:80", later));
    }
}
