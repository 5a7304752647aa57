//! Building blocks several sources share, so each broker does not grow its
//! own copy:
//!
//! - [`Watermark`]: the contiguous prefix of settled offsets, for inputs that
//!   can only record "everything below N is done" (a file's checkpoint, a
//!   Kafka partition's committed offset) while jobs finish out of order.
//! - [`Batcher`]: single settlements (an ack, a lease extension) gathered
//!   into the broker's batch calls, each caller answered for its own item.
//!
//! The third shared mechanism, the wait before an in-process retry, is not
//! here: where a broker cannot delay a redelivery, the runtime waits in the
//! job's own slot (see the [contract](super)).

mod batcher;
mod watermark;

pub use batcher::{BatchOptions, Batcher, BatcherClosed};
pub use watermark::Watermark;
