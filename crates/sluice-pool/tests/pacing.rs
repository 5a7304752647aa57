//! Point 5: pacing starts with a rate, on top of the concurrency limit.
//! Runs on tokio's paused clock: time moves only when every task waits, so
//! the instants below are exact, not measured.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_pool::{Pool, Rate};
use tokio::time::Instant;

fn gaps(starts: &[Instant]) -> Vec<Duration> {
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

async fn run(pool: &Pool, tasks: usize, work: Duration) -> Vec<Instant> {
    let starts = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..tasks {
        let starts = starts.clone();
        pool.execute(async move {
            starts.lock().unwrap().push(Instant::now());
            tokio::time::sleep(work).await;
        })
        .await
        .unwrap();
    }
    pool.join().await;
    let mut v = starts.lock().unwrap().clone();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn rate_spaces_starts_evenly() {
    let pool = Pool::builder()
        .concurrency(2)
        .queue_capacity(100)
        .rate(Rate::per_second(4))
        .build();
    let starts = run(&pool, 9, Duration::ZERO).await;
    assert_eq!(starts.len(), 9);
    for gap in gaps(&starts) {
        assert!(
            gap >= Duration::from_millis(249) && gap <= Duration::from_millis(252),
            "starts 250 ms apart, got {gap:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn two_at_a_time_and_at_most_four_a_second() {
    // Slow tasks: concurrency binds; 2 start, then 2 more as they finish.
    let pool = Pool::builder()
        .concurrency(2)
        .queue_capacity(100)
        .rate(Rate::per_second(4))
        .build();
    let starts = run(&pool, 8, Duration::from_secs(1)).await;
    let t0 = starts[0];
    // Never more than 4 starts in any one-second window...
    for (i, s) in starts.iter().enumerate() {
        let in_window = starts[i..]
            .iter()
            .filter(|t| **t - *s < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 4,
            "{in_window} starts within 1 s of {:?}",
            *s - t0
        );
    }
    // ...and never more than 2 at once: each start waits for a finish.
    for (i, s) in starts.iter().enumerate().skip(2) {
        assert!(
            *s - starts[i - 2] >= Duration::from_secs(1),
            "start {i} came before start {} finished",
            i - 2
        );
    }
}

#[tokio::test(start_paused = true)]
async fn burst_lets_a_few_go_at_once() {
    let pool = Pool::builder()
        .concurrency(10)
        .queue_capacity(100)
        .rate(Rate::per_second(10).with_burst(3))
        .build();
    let starts = run(&pool, 6, Duration::ZERO).await;
    let t0 = starts[0];
    let offsets: Vec<u128> = starts.iter().map(|s| (*s - t0).as_millis()).collect();
    assert_eq!(&offsets[..3], &[0, 0, 0], "a burst of three: {offsets:?}");
    assert!(
        offsets[3] >= 99 && offsets[5] <= 302,
        "then 100 ms apart: {offsets:?}"
    );
}
