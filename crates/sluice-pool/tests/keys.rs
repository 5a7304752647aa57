//! Point 6: per-key limits under the global limit; keys come and go.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Gate, Starts};
use sluice_pool::{KeyLimit, Pool, Rate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_at_its_cap_never_blocks_other_keys() {
    let pool = Pool::builder()
        .concurrency(10)
        .queue_capacity(100)
        .per_key(KeyLimit::concurrency(2))
        .build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    // All of a's tasks first, then b's: b must not wait behind a.
    for (key, base) in [("a", 0), ("b", 100)] {
        for i in 0..10 {
            let (g, tx) = (gate.clone(), starts.sender());
            pool.key(key)
                .execute(async move {
                    tx.send(base + i).unwrap();
                    g.pass().await;
                })
                .await
                .unwrap();
        }
    }
    let mut ids = starts.wait(4).await;
    ids.sort();
    assert_eq!(ids, vec![0, 1, 100, 101], "two of each key, in order");
    let s = pool.stats();
    assert_eq!((s.running, s.queued, s.keys), (4, 16, 2));
    // Each finish lets exactly the next task of the same key in.
    gate.release(1);
    let next = starts.wait(1).await[0];
    assert!(next == 2 || next == 102, "the next of a key: {next}");
    gate.open();
    pool.join().await;
    let s = pool.stats();
    assert_eq!((s.completed, s.keys), (20, 0), "idle keys are forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_under_the_global_limit() {
    let pool = Pool::builder()
        .concurrency(3)
        .queue_capacity(100)
        .per_key(KeyLimit::concurrency(5))
        .build();
    let probe = common::Probe::new();
    let gate = Gate::new();
    let mut starts = Starts::new();
    for i in 0..10 {
        let (p, g, tx) = (probe.clone(), gate.clone(), starts.sender());
        pool.key("only")
            .execute(async move {
                let _in = p.enter();
                tx.send(i).unwrap();
                g.pass().await;
            })
            .await
            .unwrap();
    }
    starts.wait(3).await;
    assert_eq!(probe.now(), 3, "the pool's 3, not the key's 5");
    gate.open();
    pool.join().await;
    assert_eq!(probe.max(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_with_gives_each_key_its_own_limit() {
    let pool = Pool::builder()
        .concurrency(10)
        .queue_capacity(100)
        .per_key_with(|k| KeyLimit::concurrency(if k.as_str() == "slow.example" { 1 } else { 3 }))
        .build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    for (key, base) in [("slow.example", 0), ("fast.example", 100)] {
        for i in 0..5 {
            let (g, tx) = (gate.clone(), starts.sender());
            pool.key(key)
                .execute(async move {
                    tx.send(base + i).unwrap();
                    g.pass().await;
                })
                .await
                .unwrap();
        }
    }
    let mut ids = starts.wait(4).await;
    ids.sort();
    assert_eq!(ids, vec![0, 100, 101, 102]);
    gate.open();
    pool.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_a_blocked_key_and_submit_waits_for_it() {
    let pool = Pool::builder()
        .concurrency(4)
        .queue_capacity(0)
        .per_key(KeyLimit::concurrency(1))
        .build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    let (g, tx) = (gate.clone(), starts.sender());
    pool.key("k")
        .try_execute(async move {
            tx.send(0).unwrap();
            g.pass().await;
        })
        .unwrap();
    starts.wait(1).await;
    // Slots are free, but the key is at its cap and nothing may wait.
    assert!(pool.key("k").try_execute(async {}).unwrap_err().is_full());
    assert!(pool.key("other").try_execute(async {}).is_ok());
    let second = pool.key("k").submit(async { "second" });
    let mut second = std::pin::pin!(second);
    assert!(futures::poll!(second.as_mut()).is_pending());
    gate.release(1);
    let h = second.await.ok().unwrap();
    assert_eq!(h.await.unwrap(), "second");
    pool.join().await;
}

#[tokio::test(start_paused = true)]
async fn a_key_rate_paces_that_key_alone() {
    let pool = Pool::builder()
        .concurrency(10)
        .queue_capacity(100)
        .per_key_with(|k| {
            if k.as_str() == "paced" {
                KeyLimit::unlimited().with_rate(Rate::per_second(2))
            } else {
                KeyLimit::unlimited()
            }
        })
        .build();
    let t0 = tokio::time::Instant::now();
    let starts = Arc::new(Mutex::new(Vec::new()));
    for key in ["paced", "free"] {
        for _ in 0..4 {
            let starts = starts.clone();
            pool.key(key)
                .execute(async move {
                    starts.lock().unwrap().push((key, t0.elapsed()));
                })
                .await
                .unwrap();
        }
    }
    pool.join().await;
    let starts = starts.lock().unwrap();
    let at = |key| -> Vec<Duration> {
        starts
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, t)| *t)
            .collect()
    };
    assert!(
        at("free").iter().all(|t| *t < Duration::from_millis(5)),
        "{starts:?}"
    );
    let paced = at("paced");
    for (i, t) in paced.iter().enumerate() {
        let want = Duration::from_millis(500) * i as u32;
        assert!(
            *t >= want && *t <= want + Duration::from_millis(5),
            "paced start {i} at {t:?}, want {want:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn millions_of_keys_over_time_do_not_grow_memory() {
    // Paced keys must be remembered until their pace recovers; after that
    // they are swept, so the map tracks the keys of the last moments only.
    let pool = Pool::builder()
        .concurrency(64)
        .queue_capacity(1024)
        .per_key(KeyLimit::concurrency(1).with_rate(Rate::per_second(1)))
        .build();
    let mut most = 0;
    for round in 0..20 {
        for i in 0..1000 {
            pool.key(format!("user-{round}-{i}"))
                .execute(async {})
                .await
                .unwrap();
        }
        pool.idle().await;
        most = most.max(pool.stats().keys);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(most < 3_500, "20,000 keys seen, {most} tracked at most");
    let s = pool.stats();
    assert_eq!(s.completed, 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaced_keys_are_forgotten_as_soon_as_idle() {
    let pool = Pool::builder()
        .concurrency(32)
        .queue_capacity(256)
        .per_key(KeyLimit::concurrency(2))
        .build();
    for i in 0..10_000 {
        pool.key(format!("host-{i}"))
            .execute(async {})
            .await
            .unwrap();
    }
    pool.join().await;
    let s = pool.stats();
    assert_eq!((s.completed, s.keys), (10_000, 0));
}
