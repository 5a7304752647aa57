//! Test kit: gates and probes that let a test know exactly what is running,
//! without sleeping.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, mpsc};

/// Counts tasks running now and the most ever seen at once.
#[derive(Debug, Default)]
pub struct Probe {
    now: AtomicUsize,
    max: AtomicUsize,
    entered: AtomicUsize,
}

impl Probe {
    pub fn new() -> Arc<Probe> {
        Arc::new(Probe::default())
    }

    pub fn enter(self: &Arc<Probe>) -> ProbeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        self.entered.fetch_add(1, Ordering::SeqCst);
        ProbeGuard(self.clone())
    }

    pub fn now(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

pub struct ProbeGuard(Arc<Probe>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A gate tasks wait at until the test opens it (one at a time, or all).
#[derive(Debug, Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(Semaphore::new(0)))
    }

    pub async fn pass(&self) {
        match self.0.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_closed) => {} // opened for good
        }
    }

    /// Lets `n` more tasks through.
    pub fn release(&self, n: usize) {
        self.0.add_permits(n);
    }

    /// Lets every task through, now and later.
    pub fn open(&self) {
        self.0.close();
    }
}

/// Tasks report here when they start; the test waits for a count.
pub struct Starts {
    tx: mpsc::UnboundedSender<usize>,
    rx: mpsc::UnboundedReceiver<usize>,
}

impl Starts {
    pub fn new() -> Starts {
        let (tx, rx) = mpsc::unbounded_channel();
        Starts { tx, rx }
    }

    pub fn sender(&self) -> mpsc::UnboundedSender<usize> {
        self.tx.clone()
    }

    /// Waits for `n` more start reports and returns their ids.
    pub async fn wait(&mut self, n: usize) -> Vec<usize> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.rx.recv().await.expect("a sender is kept"));
        }
        ids
    }

    /// Reports already received and not yet waited for.
    pub fn drain_now(&mut self) -> Vec<usize> {
        let mut ids = Vec::new();
        while let Ok(id) = self.rx.try_recv() {
            ids.push(id);
        }
        ids
    }
}

/// Submits one task per id: it reports its start, then waits at the gate.
pub async fn execute_gated(
    pool: &sluice_pool::Pool,
    ids: impl IntoIterator<Item = usize>,
    gate: &Gate,
    starts: &Starts,
) {
    for i in ids {
        let (g, tx) = (gate.clone(), starts.sender());
        pool.execute(async move {
            tx.send(i).unwrap();
            g.pass().await;
        })
        .await
        .unwrap();
    }
}

/// Every admitted task accounted for exactly once.
pub fn assert_accounted(s: &sluice_pool::Stats, running_tasks: u64) {
    assert_eq!(
        s.submitted,
        s.completed + s.panicked + s.cancelled + s.returned + running_tasks + s.queued as u64,
        "accounting: {s:?}"
    );
}
