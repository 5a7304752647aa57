//! Point 8 and 10: close, join, deadline shutdown that loses nothing, and a
//! pool that owns nothing in the background.

mod common;

use std::future::{IntoFuture, Pending, pending};
use std::sync::Arc;
use std::time::Duration;

use common::{Gate, Starts, assert_accounted};
use sluice_pool::{Pool, Rate};

/// A job that never finishes by itself: the deadline must deal with it.
struct Job(u32);

impl IntoFuture for Job {
    type Output = ();
    type IntoFuture = Pending<()>;
    fn into_future(self) -> Pending<()> {
        pending()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_drains_everything_admitted() {
    let pool = Pool::builder().concurrency(2).queue_capacity(50).build();
    for _ in 0..50 {
        pool.execute(tokio::task::yield_now()).await.unwrap();
    }
    pool.join().await;
    let s = pool.stats();
    assert_eq!((s.completed, s.running, s.queued), (50, 0, 0));
    assert!(pool.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_cancels_the_running_and_hands_back_the_unstarted() {
    let pool = Pool::builder().concurrency(2).queue_capacity(10).build();
    let mut handles = Vec::new();
    for id in 0..7 {
        handles.push(pool.submit(Job(id)).await.unwrap());
    }
    let report = pool.shutdown(Duration::from_millis(50)).await;
    assert!(!report.drained);
    assert_eq!(report.cancelled, 2);
    let back: Vec<u32> = report
        .unstarted
        .into_iter()
        .map(|u| u.downcast::<Job>().expect("a Job").0)
        .collect();
    assert_eq!(back, vec![2, 3, 4, 5, 6], "oldest first, the very values");
    for h in handles {
        assert!(h.await.unwrap_err().is_cancelled());
    }
    let s = pool.stats();
    assert_eq!((s.running, s.queued, s.cancelled, s.returned), (0, 0, 2, 5));
    assert_accounted(&s, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_within_the_deadline_is_a_drain() {
    let pool = Pool::new(4);
    for _ in 0..20 {
        pool.execute(tokio::task::yield_now()).await.unwrap();
    }
    let report = pool.shutdown(Duration::from_secs(60)).await;
    assert!(report.drained);
    assert!(report.unstarted.is_empty());
    assert_eq!(pool.stats().completed, 20);
}

#[tokio::test(start_paused = true)]
async fn a_task_held_for_pacing_comes_back_unstarted() {
    let pool = Pool::builder()
        .concurrency(4)
        .queue_capacity(10)
        .rate(Rate::per_minute(1))
        .build();
    pool.execute(Job(1)).await.unwrap(); // starts at once, never ends
    pool.execute(Job(2)).await.unwrap(); // a worker holds it a minute for pace
    pool.execute(Job(3)).await.unwrap();
    let report = pool.shutdown(Duration::from_secs(1)).await;
    let mut back: Vec<u32> = report
        .unstarted
        .into_iter()
        .map(|u| u.downcast::<Job>().ok().unwrap().0)
        .collect();
    back.sort();
    assert_eq!(back, vec![2, 3]);
    assert_eq!(report.cancelled, 1);
    assert_accounted(&pool.stats(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_wakes_blocked_submitters_with_their_task() {
    let pool = Pool::builder().concurrency(1).queue_capacity(0).build();
    pool.execute(Job(0)).await.unwrap();
    let blocked = pool.submit(Job(1));
    let mut blocked = std::pin::pin!(blocked);
    assert!(futures::poll!(blocked.as_mut()).is_pending());
    pool.close();
    let back = blocked.await.unwrap_err().into_inner();
    assert_eq!(back.0, 1);
    let report = pool.shutdown(Duration::ZERO).await;
    assert_eq!(report.cancelled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_queued_leaves_running_tasks_alone() {
    let pool = Pool::builder().concurrency(1).queue_capacity(5).build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    let (g, tx) = (gate.clone(), starts.sender());
    let running = pool
        .submit(async move {
            tx.send(0).unwrap();
            g.pass().await;
            "finished"
        })
        .await
        .unwrap();
    starts.wait(1).await;
    for id in 1..=3 {
        pool.execute(Job(id)).await.unwrap();
    }
    let taken = pool.take_queued();
    assert_eq!(taken.len(), 3);
    assert!(taken.iter().all(|u| u.is::<Job>() && u.key().is_none()));
    gate.open();
    assert_eq!(running.await.unwrap(), "finished");
    pool.join().await;
    assert_accounted(&pool.stats(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstarted_task_can_run_elsewhere_and_still_deliver() {
    let pool = Pool::builder().concurrency(0).queue_capacity(5).build();
    let h = pool.submit(async { 7 }).await.unwrap();
    let report = pool.shutdown(Duration::ZERO).await;
    let [task] = <[_; 1]>::try_from(report.unstarted).unwrap();
    task.run().await;
    assert_eq!(h.await.unwrap(), 7);
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Workers leave right after the pool reports idle (their last poll is still
/// returning). Watch the runtime's count until it is zero, giving up after a
/// generous bound: a leaked worker keeps it above zero forever.
async fn until_no_tasks_alive() -> usize {
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < give_up {
        if alive_tasks() == 0 {
            return 0;
        }
        tokio::task::yield_now().await;
    }
    alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pool_owns_no_task_and_a_dropped_one_leaks_nothing() {
    let pool = Pool::builder().concurrency(50).queue_capacity(100).build();
    assert_eq!(alive_tasks(), 0, "a new pool spawns nothing");
    let witness = Arc::new(());
    for _ in 0..500 {
        let w = witness.clone();
        pool.execute(async move {
            tokio::task::yield_now().await;
            drop(w);
        })
        .await
        .unwrap();
    }
    pool.idle().await;
    assert_eq!(until_no_tasks_alive().await, 0, "no workers once idle");
    assert!(!pool.is_closed());

    // Dropping the last handle with work queued: the work still runs, then
    // every task and the pool itself are gone.
    let gate = Gate::new();
    for _ in 0..100 {
        let (w, g) = (witness.clone(), gate.clone());
        pool.execute(async move {
            g.pass().await;
            drop(w);
        })
        .await
        .unwrap();
    }
    drop(pool);
    gate.open();
    assert_eq!(until_no_tasks_alive().await, 0);
    assert_eq!(
        Arc::strong_count(&witness),
        1,
        "every task ran and was freed"
    );
}
