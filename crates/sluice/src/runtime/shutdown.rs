//! Stop requests: the first asks for a graceful stop, the second forces it.

use std::sync::Arc;

use tokio::sync::watch;

/// A shared stop switch. Clones see the same state.
#[derive(Clone, Debug)]
pub struct Shutdown {
    level: Arc<watch::Sender<u8>>,
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            level: Arc::new(watch::channel(0).0),
        }
    }

    /// One more stop request: the first is graceful, the second forces.
    pub fn request(&self) -> u8 {
        let mut now = 0;
        self.level.send_modify(|l| {
            *l = l.saturating_add(1);
            now = *l;
        });
        now
    }

    /// True once a stop was requested.
    pub fn is_requested(&self) -> bool {
        *self.level.borrow() >= 1
    }

    /// Resolves once a stop was requested.
    pub async fn requested(&self) {
        self.at_least(1).await
    }

    /// Resolves once a second stop was requested.
    pub async fn forced(&self) {
        self.at_least(2).await
    }

    async fn at_least(&self, n: u8) {
        let mut rx = self.level.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = rx.wait_for(|l| *l >= n).await;
    }

    /// Turns SIGTERM, SIGINT and SIGHUP into stop requests, for the life
    /// of the runtime. SIGHUP (a closed terminal, an operator's `kill -HUP`
    /// meant as a reload) stops gracefully like SIGTERM: sluice has no
    /// reload, and the signal's default action would kill the run with no
    /// drain, leaving jobs reserved until their lease runs out.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                    _ = hup.recv() => "SIGHUP",
                };
                match this.request() {
                    1 => tracing::warn!(
                        signal = name,
                        "stopping: no new jobs; in-flight jobs get the shutdown timeout (signal again to force)"
                    ),
                    _ => tracing::warn!(signal = name, "forced stop: releasing in-flight jobs now"),
                }
            }
        });
        Ok(())
    }
}
