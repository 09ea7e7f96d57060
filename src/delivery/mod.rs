//! Delivery: every delivery the outbox created, for an immediate or a time-based
//! event, goes through one pipeline: claim (or hand-off) → render → sign → POST →
//! record → retry / disable / alert.
//!
//! The pure parts live here as small modules with no I/O of their own: `render`
//! (formats and envelopes), `sign` (signature schemes), `retry` (policy, backoff,
//! Retry-After) and `guard` (destination checks against SSRF).

pub mod guard;
pub mod render;
pub mod retry;
pub mod sign;

pub mod alert;
pub mod endpoint;
pub mod health;
pub mod pipeline;
pub mod ratelimit;
pub mod record;
pub mod send;
pub mod service;
pub mod worker;
