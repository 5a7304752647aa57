//! Points 1-3 and 9: bounded concurrency, bounded queue, results, stats.

mod common;

use std::future::{IntoFuture, Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Gate, Probe, Starts, assert_accounted};
use sluice_pool::{Pool, TaskOutcome, TrySubmitError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_n_tasks_run_at_once() {
    let pool = Pool::builder().concurrency(7).queue_capacity(1000).build();
    let probe = Probe::new();
    let gate = Gate::new();
    let mut starts = Starts::new();
    for i in 0..200 {
        let (probe, gate, tx) = (probe.clone(), gate.clone(), starts.sender());
        pool.execute(async move {
            let _in = probe.enter();
            tx.send(i).unwrap();
            gate.pass().await;
        })
        .await
        .unwrap();
    }
    // Exactly 7 start, and no more while the gate is shut.
    starts.wait(7).await;
    assert_eq!(probe.now(), 7);
    let s = pool.stats();
    assert_eq!((s.running, s.queued), (7, 193));
    gate.open();
    pool.join().await;
    assert_eq!(probe.max(), 7);
    assert_eq!(probe.entered(), 200);
    let s = pool.stats();
    assert_eq!((s.completed, s.running, s.queued), (200, 0, 0));
}

struct Message(u32);

impl IntoFuture for Message {
    type Output = u32;
    type IntoFuture = Ready<u32>;
    fn into_future(self) -> Ready<u32> {
        ready(self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_submit_hands_the_task_back_when_full_and_when_closed() {
    let pool = Pool::builder().concurrency(1).queue_capacity(2).build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    let (g, tx) = (gate.clone(), starts.sender());
    pool.execute(async move {
        tx.send(0).unwrap();
        g.pass().await;
    })
    .await
    .unwrap();
    starts.wait(1).await;
    let h1 = pool.try_submit(Message(1)).unwrap();
    let h2 = pool.try_submit(Message(2)).unwrap();
    match pool.try_submit(Message(3)) {
        Err(TrySubmitError::Full(Message(n))) => assert_eq!(n, 3),
        other => panic!("expected Full(Message(3)), got {other:?}"),
    }
    assert!(pool.try_execute(Message(4)).unwrap_err().is_full());
    assert_eq!(pool.stats().rejected, 2);

    pool.close();
    match pool.try_submit(Message(5)) {
        Err(TrySubmitError::Closed(Message(n))) => assert_eq!(n, 5),
        other => panic!("expected Closed(Message(5)), got {other:?}"),
    }
    assert_eq!(pool.submit(Message(6)).await.unwrap_err().into_inner().0, 6);
    // Closing stops intake only: what was admitted still runs.
    gate.open();
    assert_eq!(h1.await.unwrap(), 1);
    assert_eq!(h2.await.unwrap(), 2);
    pool.join().await;
    assert_eq!(pool.stats().completed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waits_for_room_then_gets_in() {
    let pool = Pool::builder().concurrency(2).queue_capacity(1).build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    common::execute_gated(&pool, 0..3, &gate, &starts).await;
    starts.wait(2).await;
    assert_eq!(pool.stats().queued, 1);

    // The 4th submit must wait: poll it by hand and watch it.
    let tx = starts.sender();
    let g = gate.clone();
    let fourth = pool.submit(async move {
        tx.send(3).unwrap();
        g.pass().await;
        "fourth"
    });
    let mut fourth = std::pin::pin!(fourth);
    assert!(
        futures::poll!(fourth.as_mut()).is_pending(),
        "submit returned while every slot and the queue were full"
    );
    assert_eq!(pool.stats().submitted, 3);
    gate.release(1); // one task finishes, the queued one starts, room appears
    let handle = fourth.await.expect("admitted once room appeared");
    assert_eq!(pool.stats().submitted, 4);
    gate.open();
    assert_eq!(handle.await.unwrap(), "fourth");
    pool.join().await;
    assert_eq!(pool.stats().completed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_queue_means_dispatch_or_busy() {
    let pool = Pool::builder().concurrency(2).queue_capacity(0).build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    for i in 0..2 {
        let (g, tx) = (gate.clone(), starts.sender());
        pool.try_execute(async move {
            tx.send(i).unwrap();
            g.pass().await;
        })
        .unwrap();
    }
    starts.wait(2).await;
    assert!(
        pool.try_execute(async {}).unwrap_err().is_full(),
        "all workers busy"
    );
    assert_eq!(pool.stats().queued, 0);
    gate.release(1);
    // Once a slot frees, a blocking submit gets straight in.
    pool.submit(async {}).await.unwrap().await.unwrap();
    gate.open();
    pool.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_carry_outputs_and_panics_without_hurting_the_pool() {
    let pool = Pool::new(4);
    let ok = pool.submit(async { 41 + 1 }).await.unwrap();
    let boom = pool
        .submit(async {
            panic!("the receiver said no");
        })
        .await
        .unwrap();
    let err = boom.await.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.panic_message(), Some("the receiver said no"));
    assert_eq!(ok.await.unwrap(), 42);
    // Fire-and-forget panics are caught and counted too.
    pool.execute(async { panic!("detached") }).await.unwrap();
    pool.idle().await;
    let s = pool.stats();
    assert_eq!((s.completed, s.panicked, s.running), (1, 2, 0));
    // The pool still works at full width.
    let probe = Probe::new();
    let gate = Gate::new();
    let mut starts = Starts::new();
    for i in 0..4 {
        let (p, g, tx) = (probe.clone(), gate.clone(), starts.sender());
        pool.execute(async move {
            let _in = p.enter();
            tx.send(i).unwrap();
            g.pass().await;
        })
        .await
        .unwrap();
    }
    starts.wait(4).await;
    assert_eq!(probe.now(), 4);
    gate.open();
    pool.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handle_detaches_the_task() {
    let pool = Pool::new(2);
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    drop(
        pool.submit(async move { d.fetch_add(1, Ordering::SeqCst) })
            .await
            .unwrap(),
    );
    pool.join().await;
    assert_eq!(done.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_account_for_every_task_and_time_them() {
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev = events.clone();
    let pool = Pool::builder()
        .concurrency(3)
        .queue_capacity(100)
        .on_task_end(move |e| ev.lock().unwrap().push(e.outcome))
        .build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    for i in 0..10 {
        let (g, tx) = (gate.clone(), starts.sender());
        pool.execute(async move {
            tx.send(i).unwrap();
            g.pass().await;
            if i == 9 {
                panic!("nine");
            }
        })
        .await
        .unwrap();
    }
    starts.wait(3).await;
    let s = pool.stats();
    assert_eq!((s.capacity, s.running, s.queued, s.free()), (3, 3, 7, 0));
    assert_accounted(&s, 3);
    gate.open();
    pool.join().await;
    let s = pool.stats();
    assert_accounted(&s, 0);
    assert_eq!((s.submitted, s.completed, s.panicked), (10, 9, 1));
    assert_eq!(s.run_time.count(), 10);
    assert_eq!(s.queue_wait.count(), 10);
    assert!(s.queue_wait.max() >= s.queue_wait.quantile(0.5));
    assert!(s.closed);
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 10);
    assert_eq!(
        events
            .iter()
            .filter(|o| **o == TaskOutcome::Panicked)
            .count(),
        1
    );
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    let pool = Pool::new(3);
    let group = pool.group();
    let sum = Arc::new(AtomicUsize::new(0));
    for n in 1..=100 {
        let sum = sum.clone();
        group
            .execute(async move {
                tokio::task::yield_now().await;
                sum.fetch_add(n, Ordering::SeqCst);
            })
            .await
            .unwrap();
    }
    group.wait().await;
    assert_eq!(sum.load(Ordering::SeqCst), 5050);
}
