//! The races: submitters, a resizer and a shutdown all at once, on real
//! threads, repeated. Every task must end up exactly one way: it ran, it was
//! cancelled while running, it came back unstarted, or its submission was
//! refused with the task handed back. Nothing lost, nothing twice.

mod common;

use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::assert_accounted;
use sluice_pool::{KeyLimit, Pool, Rate};

#[derive(Default)]
struct Tally {
    ran: AtomicU64,
    cancelled: AtomicU64,
    refused: AtomicU64,
    unstarted: AtomicU64,
}

/// A task that counts how it ended: ran to the end, or was dropped mid-run.
struct Counted {
    tally: Arc<Tally>,
    yields: u32,
    panics: bool,
}

impl IntoFuture for Counted {
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut guard = CancelGuard(Some(self.tally.clone()));
            for _ in 0..self.yields {
                tokio::task::yield_now().await;
            }
            guard.0 = None;
            self.tally.ran.fetch_add(1, Ordering::SeqCst);
            if self.panics {
                panic!("counted panic");
            }
        })
    }
}

struct CancelGuard(Option<Arc<Tally>>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn one_round(seed: u64) {
    let pool = Pool::builder()
        .concurrency(8)
        .queue_capacity(16)
        .per_key(KeyLimit::concurrency(3))
        .build();
    let tally = Arc::new(Tally::default());
    let per_submitter = 400u64;
    let submitters = 6u64;

    let mut joins = Vec::new();
    for s in 0..submitters {
        let (pool, tally) = (pool.clone(), tally.clone());
        joins.push(tokio::spawn(async move {
            for i in 0..per_submitter {
                let task = Counted {
                    tally: tally.clone(),
                    yields: ((i + s + seed) % 5) as u32,
                    panics: (i + seed) % 97 == 0,
                };
                let refused = match (i + s) % 3 {
                    0 => pool.execute(task).await.is_err(),
                    1 => pool.try_execute(task).is_err(),
                    _ => pool.key(format!("k{}", i % 4)).execute(task).await.is_err(),
                };
                if refused {
                    tally.refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    let resizer = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            for n in 0..300u64 {
                pool.resize(((n * 7 + seed) % 12) as usize + 1);
                std::thread::yield_now();
            }
        })
    };
    // Shut down part-way, from yet another task, with a short deadline.
    let stopper = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for _ in 0..(seed % 7) * 50 {
                tokio::task::yield_now().await;
            }
            pool.shutdown(Duration::from_millis(1)).await
        })
    };
    let report = stopper.await.unwrap();
    tally
        .unstarted
        .fetch_add(report.unstarted.len() as u64, Ordering::SeqCst);
    drop(report);
    for j in joins {
        j.await.unwrap();
    }
    resizer.join().unwrap();
    pool.join().await;

    let s = pool.stats();
    let t = &tally;
    let (ran, cancelled, refused, unstarted) = (
        t.ran.load(Ordering::SeqCst),
        t.cancelled.load(Ordering::SeqCst),
        t.refused.load(Ordering::SeqCst),
        t.unstarted.load(Ordering::SeqCst),
    );
    assert_eq!(
        ran + cancelled + refused + unstarted,
        submitters * per_submitter,
        "every task ended exactly one way: ran {ran}, cancelled {cancelled}, \
         refused {refused}, unstarted {unstarted}; {s:?}"
    );
    assert_eq!(s.completed + s.panicked, ran);
    assert_eq!(s.returned, unstarted);
    assert_eq!(s.submitted + s.rejected, submitters * per_submitter);
    assert_accounted(&s, 0);
    assert_eq!((s.running, s.queued), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_resize_and_shutdown_race_without_losing_a_task() {
    for seed in 0..40 {
        one_round(seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_under_load_are_isolated_and_counted() {
    let pool = Pool::builder().concurrency(32).queue_capacity(64).build();
    let tally = Arc::new(Tally::default());
    let mut handles = Vec::new();
    for i in 0..10_000u32 {
        let task = Counted {
            tally: tally.clone(),
            yields: i % 3,
            panics: i % 7 == 0,
        };
        if i % 10 == 0 {
            handles.push((i, pool.submit(task).await.unwrap()));
        } else {
            pool.execute(task).await.unwrap();
        }
    }
    pool.join().await;
    let s = pool.stats();
    assert_eq!(s.panicked, 10_000u64.div_ceil(7));
    assert_eq!(s.completed + s.panicked, 10_000);
    for (i, h) in handles {
        assert_eq!(h.await.is_err(), i % 7 == 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_keyed_load_settles_everything() {
    let pool = Pool::builder()
        .concurrency(16)
        .queue_capacity(256)
        .rate(Rate::per_second(100_000))
        .per_key(KeyLimit::concurrency(2).with_rate(Rate::per_second(50_000)))
        .build();
    let group = pool.group();
    for i in 0..3_000u32 {
        group
            .key(format!("dest-{}", i % 37))
            .execute(tokio::task::yield_now())
            .await
            .unwrap();
    }
    group.wait().await;
    // The group's handles are delivered; workers leave right after.
    pool.idle().await;
    let s = pool.stats();
    assert_eq!(s.completed, 3_000);
    assert_eq!((s.running, s.queued), (0, 0));
}
