//! A bounded async worker pool for tokio.
//!
//! The hand-made pools this replaces — a buffered channel used as a
//! semaphore, N workers reading a task channel, a wait group, a dispatch that
//! either blocks or says "all workers busy", a stop that drains — in one small
//! API:
//!
//! - **Bounded concurrency**: at most N tasks run at once ([`Pool::new`]).
//! - **Bounded wait queue** of capacity Q (may be 0): [`Pool::submit`] waits
//!   for room; [`Pool::try_submit`] hands the task straight back with
//!   [`TrySubmitError::Full`] or [`TrySubmitError::Closed`]. A task is never
//!   dropped.
//! - **Results**: a [`TaskHandle`] resolves to the output, or to a
//!   [`TaskError`] saying it panicked or was cancelled. A panic frees its slot
//!   and is counted; the pool carries on. [`Pool::execute`] is the
//!   fire-and-forget path, with no handle allocated.
//! - **Resize at runtime** from any thread ([`Pool::resize`]): growing starts
//!   waiting tasks at once, shrinking never interrupts a running task.
//! - **Pacing**: a [`Rate`] on task starts, on top of the concurrency limit.
//! - **Per-key limits** ([`Pool::key`], [`KeyLimit`]): a concurrency cap and
//!   optional rate per key, under the global limit. Keys appear on demand and
//!   are forgotten when idle, so millions of keys over time cost nothing.
//! - **Reserve, then submit** ([`Pool::reserve`], [`Pool::try_reserve`],
//!   [`Permit`]): take places before the tasks exist (a consumer asks its
//!   broker for exactly as many messages as it has places), then spend them
//!   without waiting, keyed or not ([`Permit::execute_keyed`]). Other
//!   submissions never take a reserved place.
//! - **Inline slots** ([`Keyed::acquire`], [`Pool::acquire`], [`Slot`]): hold
//!   a slot of the pool and of a key, under its limits and pace, while
//!   running the work in your own task, with nothing spawned.
//! - **Groups** ([`Pool::group`]): wait for just your batch.
//! - **Shutdown**: [`Pool::close`], [`Pool::join`] (drain everything), and
//!   [`Pool::shutdown`] with a deadline, which cancels what still runs and
//!   hands back every task that never started ([`Unstarted`]).
//! - **Stats** ([`Pool::stats`]): gauges, counters and queue-wait and
//!   run-time distributions under one short lock; [`Builder::on_task_end`]
//!   feeds a metrics facade.
//! - **Nothing in the background**: an idle pool owns no task or thread.
//!   Workers exist only while there is work, and dropping the last handle
//!   lets the work finish and frees everything.
//!
//! # Example: send 20,000 messages, 3 at a time, and wait for all
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use sluice_pool::Pool;
//!
//! let pool = Pool::new(3);
//! let sent = Arc::new(AtomicUsize::new(0));
//! for user in 0..20_000u32 {
//!     let sent = sent.clone();
//!     // Waits while 3 are running and 3 more are queued: memory stays flat.
//!     pool.execute(async move {
//!         let _ = user; // send the message here
//!         sent.fetch_add(1, Ordering::Relaxed);
//!     })
//!     .await
//!     .expect("the pool is open");
//! }
//! pool.join().await;
//! assert_eq!(sent.load(Ordering::Relaxed), 20_000);
//! assert_eq!(pool.stats().completed, 20_000);
//! # }
//! ```
//!
//! # Example: a consumer's shutdown that loses nothing
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//!
//! let pool = sluice_pool::Pool::builder().concurrency(2).queue_capacity(10).build();
//! for id in 0..5u32 {
//!     pool.execute(async move { let _ = id; std::future::pending::<()>().await }).await.unwrap();
//! }
//! let report = pool.shutdown(Duration::from_millis(10)).await;
//! assert_eq!(report.cancelled, 2);          // were running: cancelled, counted
//! assert_eq!(report.unstarted.len(), 3);    // never started: yours to put back
//! # }
//! ```
//!
//! Examples of every pattern live in the crate's `examples/` folder.

mod builder;
mod error;
mod event;
mod group;
mod handle;
mod key;
mod permit;
mod pool;
mod queue;
mod rate;
mod shared;
mod shutdown;
mod slot;
mod state;
mod stats;
mod task;
mod worker;

pub use builder::{Builder, DEFAULT_CONCURRENCY};
pub use error::{Closed, SubmitError, TryReserveError, TrySubmitError};
pub use event::{TaskEvent, TaskOutcome};
pub use group::{Group, GroupKeyed};
pub use handle::{TaskError, TaskHandle};
pub use key::{Key, KeyLimit};
pub use permit::Permit;
pub use pool::{Keyed, Pool};
pub use rate::Rate;
pub use shutdown::{RunUnstarted, ShutdownReport, Unstarted};
pub use slot::Slot;
pub use stats::{Histogram, Stats};
