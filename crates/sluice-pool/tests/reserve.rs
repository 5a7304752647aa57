//! Reserve-then-submit (`Pool::reserve`, `Permit`) and inline slots
//! (`Keyed::acquire`, `Slot`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Gate, Probe, Starts};
use sluice_pool::{KeyLimit, Pool, Rate, TryReserveError};

#[tokio::test]
async fn permits_hold_places_that_plain_submits_cannot_take() {
    let pool = Pool::builder().concurrency(2).queue_capacity(1).build();
    let a = pool.try_reserve().unwrap();
    let b = pool.try_reserve().unwrap();
    assert_eq!(pool.stats().reserved, 2);
    // One place left: a plain task takes it, then everything is spoken for.
    let gate = Gate::new();
    let g = gate.clone();
    pool.try_execute(async move { g.pass().await }).unwrap();
    assert_eq!(pool.try_reserve().unwrap_err(), TryReserveError::Full);
    assert!(pool.try_execute(async {}).unwrap_err().is_full());
    // Spending never waits, even with every slot busy.
    let mut starts = Starts::new();
    for (i, p) in [a, b].into_iter().enumerate() {
        let (g, tx) = (gate.clone(), starts.sender());
        p.execute(async move {
            tx.send(i).unwrap();
            g.pass().await;
        })
        .unwrap();
    }
    let s = pool.stats();
    assert_eq!((s.running, s.queued, s.reserved), (2, 1, 0), "{s:?}");
    gate.open();
    starts.wait(2).await;
    pool.join().await;
    assert_eq!(pool.stats().completed, 3);
}

#[tokio::test]
async fn a_dropped_permit_wakes_a_waiting_reserve() {
    let pool = Pool::builder().concurrency(1).queue_capacity(0).build();
    let held = pool.reserve().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.reserve().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "the only place is reserved");
    drop(held);
    waiter.await.unwrap().expect("the place came back");
    assert_eq!(pool.stats().reserved, 0);
}

#[tokio::test]
async fn a_finished_task_wakes_a_waiting_reserve() {
    let pool = Pool::builder().concurrency(1).queue_capacity(0).build();
    let gate = Gate::new();
    let g = gate.clone();
    pool.reserve()
        .await
        .unwrap()
        .execute(async move { g.pass().await })
        .unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.reserve().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    gate.open();
    waiter.await.unwrap().expect("the slot came free");
}

#[tokio::test]
async fn closing_refuses_waiting_reserves_and_hands_back_tasks_of_old_permits() {
    let pool = Pool::builder().concurrency(1).queue_capacity(0).build();
    let permit = pool.reserve().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.reserve().await.map(drop) })
    };
    tokio::task::yield_now().await;
    pool.close();
    assert!(
        waiter.await.unwrap().is_err(),
        "a closed pool reserves nothing"
    );
    let back = permit.execute(async { 7 }).unwrap_err().into_inner();
    assert_eq!(back.await, 7, "the task is handed back, never dropped");
    assert_eq!(pool.stats().reserved, 0);
}

#[tokio::test]
async fn keyed_permits_keep_their_keys_order() {
    let pool = Pool::builder()
        .concurrency(4)
        .queue_capacity(0)
        .per_key(KeyLimit::concurrency(1))
        .build();
    let order = Arc::new(Mutex::new(Vec::new()));
    let probe = Probe::new();
    for i in 0..6 {
        let permit = pool
            .try_reserve()
            .expect("room for 4, then more as they finish");
        let (order, probe) = (order.clone(), probe.clone());
        permit
            .execute_keyed("group", async move {
                let _in = probe.enter();
                tokio::task::yield_now().await;
                order.lock().unwrap().push(i);
            })
            .unwrap();
        if i == 3 {
            pool.idle().await;
        }
    }
    pool.join().await;
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(probe.max(), 1, "one at a time per key");
}

#[tokio::test]
async fn acquire_holds_a_keys_slot_without_spawning() {
    let pool = Pool::builder()
        .concurrency(3)
        .per_key(KeyLimit::concurrency(2))
        .build();
    let host = pool.key("h");
    let a = host.acquire().await.unwrap();
    let b = host.acquire().await.unwrap();
    let third = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.key("h").acquire().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert!(!third.is_finished(), "the key is at its limit");
    // Another key still gets the pool's last slot; then the pool is full.
    let other = pool.key("o").acquire().await.unwrap();
    assert_eq!(pool.stats().running, 3);
    drop(other);
    tokio::task::yield_now().await;
    assert!(
        !third.is_finished(),
        "the pool has room but the key has none"
    );
    drop(a);
    third
        .await
        .unwrap()
        .expect("a slot of the pool and of the key");
    drop(b);
    pool.join().await;
    assert_eq!(pool.stats().running, 0);
}

#[tokio::test(start_paused = true)]
async fn acquire_follows_a_keys_pace() {
    let pool = Pool::builder()
        .concurrency(10)
        .per_key(KeyLimit::unlimited().with_rate(Rate::per_second(2).with_burst(1)))
        .build();
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        drop(pool.key("h").acquire().await.unwrap());
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(1100),
        "3 starts at 2/s with a burst of 1 take a second: {took:?}"
    );
}

#[tokio::test]
async fn join_waits_for_slots_and_close_refuses_them() {
    let pool = Pool::new(2);
    let slot = pool.acquire().await.unwrap();
    let joined = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.join().await })
    };
    tokio::task::yield_now().await;
    assert!(!joined.is_finished(), "a slot in use is work in the pool");
    assert!(pool.acquire().await.is_err(), "join closed the pool");
    drop(slot);
    joined.await.unwrap();
}
