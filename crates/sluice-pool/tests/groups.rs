//! Point 7: groups wait for their own batch without closing the pool.

mod common;

use common::{Gate, Starts};
use sluice_pool::{KeyLimit, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_waits_for_its_batch_only() {
    let pool = Pool::builder().concurrency(8).queue_capacity(100).build();
    let other_gate = Gate::new();
    let mut starts = Starts::new();
    // Unrelated work that stays running throughout.
    common::execute_gated(&pool, 0..3, &other_gate, &starts).await;
    starts.wait(3).await;

    let batch = pool.group();
    let batch_gate = Gate::new();
    let mut handles = Vec::new();
    for i in 0..20u32 {
        let g = batch_gate.clone();
        handles.push(
            batch
                .submit(async move {
                    g.pass().await;
                    i
                })
                .await
                .unwrap(),
        );
    }
    assert_eq!(batch.pending(), 20);
    let wait = batch.wait();
    let mut wait = std::pin::pin!(wait);
    assert!(futures::poll!(wait.as_mut()).is_pending());
    batch_gate.open();
    wait.await;
    assert_eq!(batch.pending(), 0);
    // Every handle of the group is resolved by the time wait returns.
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap(), i as u32);
    }
    let s = pool.stats();
    assert!(!s.closed, "the pool stays open");
    assert_eq!(s.completed, 20, "the batch is done, the other work is not");
    // The group can be used again.
    batch.execute(async {}).await.unwrap();
    batch.wait().await;
    other_gate.open();
    pool.join().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_empty_group_is_done_at_once() {
    let pool = Pool::new(1);
    pool.group().wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_count_panics_refusals_and_keyed_tasks() {
    let pool = Pool::builder()
        .concurrency(1)
        .queue_capacity(1)
        .per_key(KeyLimit::concurrency(1))
        .build();
    let group = pool.group();
    let gate = Gate::new();
    let mut starts = Starts::new();
    let (g, tx) = (gate.clone(), starts.sender());
    group
        .key("host")
        .execute(async move {
            tx.send(0).unwrap();
            g.pass().await
        })
        .await
        .unwrap();
    starts.wait(1).await;
    group.execute(async { panic!("in a group") }).await.unwrap();
    assert_eq!(group.pending(), 2, "one running, one queued");
    // The pool is full: a refused submission leaves nothing pending behind.
    assert!(group.try_execute(async {}).unwrap_err().is_full());
    assert_eq!(group.pending(), 2);
    gate.open();
    group.wait().await;
    assert_eq!(group.pending(), 0);
    let s = pool.stats();
    assert_eq!((s.completed, s.panicked, s.rejected), (1, 1, 1));
}
