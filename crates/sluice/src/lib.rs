//! sluice: drain message queues through I/O-heavy jobs with thousands in
//! flight, acknowledging each message only after its job succeeded.
//!
//! The daemon's runtime, sources and steps are being built (see the
//! project's DESIGN.md); today this crate holds the `demo` command, which
//! shows the [`sluice_pool`] worker pool at work.

pub mod demo;
