//! Point 4: resize at runtime, up and down, from any thread.

mod common;

use common::{Gate, Probe, Starts};
use sluice_pool::Pool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_starts_waiting_tasks_at_once() {
    let pool = Pool::builder().concurrency(2).queue_capacity(100).build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    common::execute_gated(&pool, 0..10, &gate, &starts).await;
    starts.wait(2).await;
    pool.resize(6);
    // Four more start with nothing else happening: no task had to finish.
    starts.wait(4).await;
    let s = pool.stats();
    assert_eq!((s.capacity, s.running, s.queued), (6, 6, 4));
    gate.open();
    pool.join().await;
    assert_eq!(pool.stats().completed, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_never_interrupts_and_takes_effect_as_tasks_finish() {
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let pool = Pool::builder()
        .concurrency(4)
        .queue_capacity(100)
        .on_task_end(move |_| ended_tx.send(()).unwrap())
        .build();
    let probe = Probe::new();
    let gate = Gate::new();
    let mut starts = Starts::new();
    for i in 0..20 {
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
    pool.resize(1);
    let s = pool.stats();
    assert_eq!((s.capacity, s.running), (1, 4), "running tasks keep going");
    assert_eq!(s.free(), 0, "free slots never go negative");
    // Let three finish: none of them is replaced, so one still runs.
    gate.release(3);
    for _ in 0..3 {
        ended.recv().await.unwrap();
    }
    assert_eq!(
        starts.drain_now(),
        Vec::<usize>::new(),
        "nothing new started"
    );
    assert_eq!(probe.now(), 1);
    // From now on, one at a time.
    for _ in 0..16 {
        gate.release(1);
        starts.wait(1).await;
        assert_eq!(probe.now(), 1);
        assert_eq!(pool.stats().free(), 0);
    }
    gate.open();
    pool.join().await;
    assert_eq!(pool.stats().completed, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_works_from_a_plain_thread() {
    let pool = Pool::builder().concurrency(1).queue_capacity(10).build();
    let gate = Gate::new();
    let mut starts = Starts::new();
    common::execute_gated(&pool, 0..3, &gate, &starts).await;
    starts.wait(1).await;
    let p = pool.clone();
    std::thread::spawn(move || p.resize(3)).join().unwrap();
    starts.wait(2).await;
    assert_eq!(pool.stats().running, 3);
    gate.open();
    pool.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_to_zero_pauses_and_back_resumes() {
    let pool = Pool::builder().concurrency(0).queue_capacity(10).build();
    let h = pool.submit(async { "ran" }).await.unwrap();
    assert_eq!(pool.stats().queued, 1);
    assert!(
        pool.try_execute(async {}).is_ok(),
        "queue still takes tasks"
    );
    pool.resize(1);
    assert_eq!(h.await.unwrap(), "ran");
    pool.join().await;
    assert_eq!(pool.stats().completed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_to_one_and_back_up_under_load() {
    let pool = Pool::builder().concurrency(16).queue_capacity(64).build();
    let probe = Probe::new();
    let resizer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for round in 0..200 {
                pool.resize(if round % 2 == 0 { 1 } else { 16 });
                tokio::task::yield_now().await;
            }
            pool.resize(16);
        })
    };
    for _ in 0..5_000 {
        let p = probe.clone();
        pool.execute(async move {
            let _in = p.enter();
            tokio::task::yield_now().await;
        })
        .await
        .unwrap();
    }
    resizer.await.unwrap();
    pool.join().await;
    let s = pool.stats();
    assert_eq!(s.completed, 5_000);
    assert_eq!((s.running, s.queued), (0, 0));
    assert!(probe.max() <= 16, "max {}", probe.max());
}
