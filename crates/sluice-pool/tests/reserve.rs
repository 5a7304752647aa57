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

/// Fails a test that would otherwise hang on a lost wake-up. A guard, not a
/// synchronisation: every test below completes without it.
async fn surely<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("hung: {what}"))
}

#[tokio::test]
async fn a_consumer_never_holds_more_than_the_pool_can_run() {
    const CAPACITY: usize = 3;
    let pool = Pool::builder()
        .concurrency(CAPACITY)
        .queue_capacity(0)
        .build();
    let mut broker: std::collections::VecDeque<usize> = (0..50).collect();
    let probe = Probe::new();
    let mut handles = Vec::new();
    while !broker.is_empty() {
        let mut permits = vec![pool.reserve().await.unwrap()];
        while let Ok(p) = pool.try_reserve() {
            permits.push(p);
        }
        let s = pool.stats();
        assert!(
            s.running + s.queued + s.reserved <= CAPACITY,
            "places over capacity: {s:?}"
        );
        assert_eq!(s.reserved, permits.len());
        // Ask the broker for exactly as many messages as places held.
        let n = permits.len().min(broker.len());
        for (m, permit) in broker.drain(..n).zip(permits) {
            let probe = probe.clone();
            handles.push(
                permit
                    .submit(async move {
                        let _in = probe.enter();
                        tokio::task::yield_now().await;
                        m
                    })
                    .unwrap(),
            );
        }
        assert_eq!(pool.stats().reserved, 0, "spent, or dropped unspent");
    }
    let mut got = Vec::new();
    for h in handles {
        got.push(h.await.unwrap());
    }
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    assert!(probe.max() <= CAPACITY);
    pool.join().await;
    common::assert_accounted(&pool.stats(), 0);
}

#[tokio::test]
async fn when_every_place_is_reserved_nothing_else_gets_in() {
    let pool = Pool::builder()
        .concurrency(1)
        .queue_capacity(1)
        .per_key(KeyLimit::concurrency(5))
        .build();
    let a = pool.try_reserve().unwrap();
    let b = pool.try_reserve().unwrap();
    assert_eq!(pool.try_reserve().unwrap_err(), TryReserveError::Full);
    assert!(pool.try_submit(async {}).unwrap_err().is_full());
    assert!(pool.key("k").try_execute(async {}).unwrap_err().is_full());
    // A plain submit waits for the place, and gets it when a permit goes.
    let submitted = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.submit(async { 1 }).await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert!(!submitted.is_finished(), "the only room left is reserved");
    drop(a);
    surely("submit after a permit is dropped", submitted)
        .await
        .unwrap()
        .unwrap();
    drop(b);
    pool.join().await;
    let s = pool.stats();
    assert_eq!((s.completed, s.reserved, s.rejected), (1, 0, 2), "{s:?}");
}

#[tokio::test]
async fn a_keyed_permit_waits_behind_its_keys_running_task() {
    let pool = Pool::builder()
        .concurrency(2)
        .queue_capacity(0)
        .per_key(KeyLimit::concurrency(1))
        .build();
    let first = pool.try_reserve().unwrap();
    let second = pool.try_reserve().unwrap();
    let gate = Gate::new();
    let mut starts = Starts::new();
    let (g, tx) = (gate.clone(), starts.sender());
    first
        .execute_keyed("k", async move {
            tx.send(1).unwrap();
            g.pass().await;
        })
        .unwrap();
    let tx = starts.sender();
    let h = second
        .submit_keyed("k", async move {
            tx.send(2).unwrap();
            "second"
        })
        .unwrap();
    assert_eq!(starts.wait(1).await, [1]);
    let s = pool.stats();
    // A slot is free, but the key is at its limit: the second waits for it,
    // in its reserved place, past the queue's capacity of 0.
    assert_eq!((s.running, s.queued, s.reserved), (1, 1, 0), "{s:?}");
    assert!(starts.drain_now().is_empty());
    gate.open();
    assert_eq!(h.await.unwrap(), "second");
    assert_eq!(starts.wait(1).await, [2]);
    pool.join().await;
}

#[tokio::test]
async fn a_dropped_permit_wakes_a_reserver_even_with_a_slot_waiter_ahead() {
    let pool = Pool::builder().concurrency(1).queue_capacity(1).build();
    let gate = Gate::new();
    let g = gate.clone();
    pool.execute(async move { g.pass().await }).await.unwrap();
    let held = pool.try_reserve().unwrap();
    // Waits for a running slot: a returned queue place is of no use to it.
    let slot_waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire().await.map(drop) })
    };
    tokio::task::yield_now().await;
    let reserver = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.reserve().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert!(!slot_waiter.is_finished() && !reserver.is_finished());
    drop(held);
    surely("the reserver gets the place given back", reserver)
        .await
        .unwrap()
        .unwrap();
    assert!(!slot_waiter.is_finished(), "the slot is still busy");
    gate.open();
    surely("the slot waiter", slot_waiter)
        .await
        .unwrap()
        .unwrap();
    pool.join().await;
}

#[tokio::test]
async fn slots_and_tasks_share_the_global_limit() {
    let pool = Pool::builder()
        .concurrency(2)
        .queue_capacity(4)
        .per_key(KeyLimit::concurrency(10))
        .build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    common::execute_gated(&pool, [0], &gate, &starts).await;
    let slot = pool.key("h").acquire().await.unwrap();
    assert_eq!(pool.stats().running, 2);
    // The pool is full: tasks queue, and another slot waits.
    common::execute_gated(&pool, [1], &gate, &starts).await;
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.key("h").acquire().await.map(drop) })
    };
    starts.wait(1).await;
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    let s = pool.stats();
    assert_eq!((s.running, s.queued), (2, 1), "{s:?}");
    // The slot's release starts the queued task, which was first in line.
    drop(slot);
    assert_eq!(starts.wait(1).await, [1]);
    assert!(!waiter.is_finished(), "two tasks hold both slots");
    gate.open();
    surely("a slot after the tasks", waiter)
        .await
        .unwrap()
        .unwrap();
    pool.join().await;
    let s = pool.stats();
    assert_eq!((s.completed, s.running, s.keys), (4, 0, 0), "{s:?}");
    common::assert_accounted(&s, 0);
}

#[tokio::test]
async fn close_refuses_acquires_waiting_on_a_key() {
    let pool = Pool::builder()
        .concurrency(4)
        .per_key(KeyLimit::concurrency(1))
        .build();
    let held = pool.key("h").acquire().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.key("h").acquire().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    pool.close();
    assert!(
        surely("a closed pool refuses a waiting acquire", waiter)
            .await
            .unwrap()
            .is_err()
    );
    assert!(pool.acquire().await.is_err());
    assert!(pool.key("other").acquire().await.is_err());
    drop(held);
    pool.join().await;
    assert_eq!(pool.stats().keys, 0);
}

#[tokio::test(start_paused = true)]
async fn close_refuses_acquires_waiting_on_a_pace() {
    let pool = Pool::builder()
        .per_key(KeyLimit::unlimited().with_rate(Rate::per_minute(1)))
        .build();
    drop(pool.key("h").acquire().await.unwrap());
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.key("h").acquire().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    let asked = tokio::time::Instant::now();
    pool.close();
    assert!(waiter.await.unwrap().is_err());
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "not after the pace"
    );
}

#[tokio::test]
async fn acquires_behind_a_keys_queued_tasks_go_on_when_those_are_taken_out() {
    let pool = Pool::builder()
        .concurrency(1)
        .queue_capacity(4)
        .per_key(KeyLimit::concurrency(2))
        .build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    common::execute_gated(&pool, [0], &gate, &starts).await;
    starts.wait(1).await;
    pool.key("h").execute(async {}).await.unwrap();
    // Behind the key's queued task, in order.
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.key("h").acquire().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert_eq!(pool.take_queued().len(), 1);
    gate.open();
    surely("an acquire once nothing of its key is queued", waiter)
        .await
        .unwrap()
        .unwrap();
    pool.join().await;
}

#[tokio::test]
async fn a_cancelled_acquire_passes_its_turn_on() {
    let pool = Pool::builder()
        .concurrency(4)
        .per_key(KeyLimit::concurrency(1))
        .build();
    let held = pool.key("h").acquire().await.unwrap();
    let spawn_waiter = || {
        let pool = pool.clone();
        tokio::spawn(async move { pool.key("h").acquire().await.map(drop) })
    };
    let first = spawn_waiter();
    tokio::task::yield_now().await;
    let second = spawn_waiter();
    tokio::task::yield_now().await;
    // The first waiter is woken by the release, then cancelled before it
    // runs: the wake must reach the second.
    drop(held);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    surely("the second waiter", second).await.unwrap().unwrap();
    pool.join().await;
    let s = pool.stats();
    assert_eq!((s.running, s.keys, s.completed), (0, 0, 2), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn slots_follow_the_pools_pace_too() {
    let pool = Pool::builder()
        .concurrency(10)
        .rate(Rate::per_second(4).with_burst(1))
        .build();
    let started = tokio::time::Instant::now();
    for _ in 0..5 {
        drop(pool.acquire().await.unwrap());
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(1100),
        "5 starts at 4/s take a second: {took:?}"
    );
}

#[test]
fn permits_slots_and_their_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _in = rt.enter();
    let pool = Pool::new(1);
    send(&pool.reserve());
    send(&pool.acquire());
    send(&pool.key("k").acquire());
    let permit = pool.try_reserve().unwrap();
    send(&permit);
    drop(permit);
    let slot = rt.block_on(pool.acquire()).unwrap();
    send(&slot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slots_tasks_permits_and_cancelled_waiters_under_contention() {
    const CAPACITY: usize = 6;
    const PER_KEY: usize = 2;
    let pool = Pool::builder()
        .concurrency(CAPACITY)
        .queue_capacity(4)
        .per_key(KeyLimit::concurrency(PER_KEY))
        .build();
    let keys = ["a", "b", "c"];
    let probes: Vec<_> = keys.iter().map(|_| Probe::new()).collect();
    let all = Probe::new();
    let mut joins = Vec::new();
    let mut doomed = Vec::new();
    for i in 0..300usize {
        let k = i % keys.len();
        let (pool, probe, all) = (pool.clone(), probes[k].clone(), all.clone());
        let key = keys[k];
        let job = tokio::spawn(async move {
            match i % 4 {
                // Inline work in a slot of the key.
                0 | 1 => {
                    let _slot = pool.key(key).acquire().await.unwrap();
                    let (_k, _a) = (probe.enter(), all.enter());
                    tokio::task::yield_now().await;
                }
                // A keyed task.
                2 => {
                    let h = pool
                        .key(key)
                        .submit(async move {
                            let (_k, _a) = (probe.enter(), all.enter());
                            tokio::task::yield_now().await;
                        })
                        .await
                        .unwrap();
                    h.await.unwrap();
                }
                // A keyed task through a permit.
                _ => {
                    let permit = pool.reserve().await.unwrap();
                    let h = permit
                        .submit_keyed(key, async move {
                            let (_k, _a) = (probe.enter(), all.enter());
                            tokio::task::yield_now().await;
                        })
                        .unwrap();
                    h.await.unwrap();
                }
            }
        });
        if i % 7 == 0 {
            doomed.push(job);
        } else {
            joins.push(job);
        }
    }
    // Cancelled wherever they are: waiting for a key, a slot or a place, or
    // holding one.
    for job in &doomed {
        job.abort();
    }
    for job in joins {
        surely("every job that was not cancelled", job)
            .await
            .unwrap();
    }
    for job in doomed {
        let _ = job.await;
    }
    pool.join().await;
    for p in &probes {
        assert!(p.max() <= PER_KEY, "a key over its limit: {}", p.max());
    }
    assert!(all.max() <= CAPACITY);
    let s = pool.stats();
    assert_eq!(
        (s.running, s.queued, s.reserved, s.keys),
        (0, 0, 0, 0),
        "{s:?}"
    );
    common::assert_accounted(&s, 0);
}
