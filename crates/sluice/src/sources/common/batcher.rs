//! The batched-settle helper.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// When a [`Batcher`] sends a batch.
#[derive(Clone)]
pub struct BatchOptions {
    /// Items per batch call at most (SQS: 10).
    pub max_batch: usize,
    /// A batch waits at most this long for more items.
    pub linger: Duration,
    /// Batch calls in flight at most.
    pub in_flight: usize,
    /// Asked when items wait: true sends them at once (nothing else is
    /// coming soon, e.g. every delivered message is already settling).
    pub flush_now: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for BatchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchOptions")
            .field("max_batch", &self.max_batch)
            .field("linger", &self.linger)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// The batcher's task has ended; the item was not sent.
#[derive(Debug, thiserror::Error)]
#[error("the batcher has stopped")]
pub struct BatcherClosed;

type Reply = oneshot::Sender<Result<(), String>>;

/// Gathers items into batch calls: a batch goes when it is full, when
/// [`BatchOptions::flush_now`] says so, or after the linger, with at most
/// `in_flight` calls at once. Each [`submit`](Batcher::submit) resolves
/// with its own item's result, so a partly failed batch fails only the
/// items that failed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use sluice::sources::common::{BatchOptions, Batcher};
///
/// let opts = BatchOptions { max_batch: 10, linger: Duration::from_millis(5), in_flight: 2, flush_now: None };
/// // The flush returns one result per item, in order.
/// let (deletes, task) = Batcher::spawn(opts, |ids: Vec<u32>| async move {
///     ids.iter().map(|id| if id % 2 == 0 { Ok(()) } else { Err(format!("{id} failed")) }).collect()
/// });
/// assert!(deletes.submit(2).await.unwrap().is_ok());
/// assert_eq!(deletes.submit(3).await.unwrap(), Err("3 failed".to_string()));
/// drop(deletes);
/// task.await.unwrap();
/// # }
/// ```
pub struct Batcher<T> {
    tx: mpsc::UnboundedSender<(T, Reply)>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Batcher<T> {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// Starts the batcher's task. `flush` sends one batch and returns one
    /// result per item, in order. The task ends once every `Batcher` clone
    /// is dropped and the last batch answered.
    pub fn spawn<F, Fut>(opts: BatchOptions, flush: F) -> (Batcher<T>, JoinHandle<()>)
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<(), String>>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(opts, Arc::new(flush), rx));
        (Batcher { tx }, task)
    }

    /// Queues `item` and waits for its batch's answer for it.
    pub async fn submit(&self, item: T) -> Result<Result<(), String>, BatcherClosed> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).map_err(|_| BatcherClosed)?;
        answer.await.map_err(|_| BatcherClosed)
    }
}

async fn run<T, F, Fut>(
    opts: BatchOptions,
    flush: Arc<F>,
    mut rx: mpsc::UnboundedReceiver<(T, Reply)>,
) where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<(), String>>> + Send + 'static,
{
    let max = opts.max_batch.max(1);
    let in_flight = opts.in_flight.max(1);
    let mut pending: Vec<(T, Reply)> = Vec::new();
    let mut first_at = Instant::now();
    let mut calls = JoinSet::new();
    let mut closed = false;
    loop {
        let full = pending.len() >= max;
        let now_please =
            !pending.is_empty() && (closed || opts.flush_now.as_ref().is_some_and(|f| f()));
        let lingered = !pending.is_empty() && first_at.elapsed() >= opts.linger;
        if (full || now_please || lingered) && calls.len() < in_flight {
            let batch: Vec<_> = pending.drain(..pending.len().min(max)).collect();
            first_at = Instant::now();
            let flush = flush.clone();
            calls.spawn(async move {
                let (items, replies): (Vec<T>, Vec<Reply>) = batch.into_iter().unzip();
                let n = items.len();
                let mut results = flush(items).await;
                results.resize_with(n, || Err("the batch call gave no answer".into()));
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            });
            continue;
        }
        if closed && pending.is_empty() {
            break;
        }
        let idle = pending.is_empty() || calls.len() >= in_flight;
        let linger = async {
            if idle {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep_until(first_at + opts.linger).await
            }
        };
        tokio::select! {
            got = rx.recv(), if !closed => match got {
                Some(p) => {
                    if pending.is_empty() {
                        first_at = Instant::now();
                    }
                    pending.push(p);
                }
                None => closed = true,
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
            _ = linger => {}
        }
    }
    while calls.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn full_batches_go_at_once_and_each_caller_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let opts = BatchOptions {
            max_batch: 3,
            linger: Duration::from_secs(3600),
            in_flight: 1,
            flush_now: None,
        };
        let (b, task) = Batcher::spawn(opts, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move {
                items
                    .into_iter()
                    .map(|i| if i == 4 { Err("no".into()) } else { Ok(()) })
                    .collect()
            }
        });
        let answers = futures::future::join_all((0..6).map(|i| b.submit(i))).await;
        let failed: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| a.as_ref().unwrap().is_err())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(failed, [4]);
        // A linger of an hour: only full batches can have gone.
        assert_eq!(*sizes.lock().unwrap(), [3, 3]);
        drop(b);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn flush_now_sends_a_lone_item_without_lingering() {
        let opts = BatchOptions {
            max_batch: 10,
            linger: Duration::from_secs(3600),
            in_flight: 1,
            flush_now: Some(Arc::new(|| true)),
        };
        let (b, task) = Batcher::spawn(
            opts,
            |items: Vec<u8>| async move { vec![Ok(()); items.len()] },
        );
        // With an hour's linger, only flush_now can answer this.
        assert!(b.submit(1).await.unwrap().is_ok());
        drop(b);
        task.await.unwrap();
    }
}
