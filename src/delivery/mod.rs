//! Delivery: every event in the outbox, immediate or time-based, goes through one
//! pipeline: fan-out to matching endpoints → render → sign → POST → retry / disable.
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
pub mod fanout;
pub mod handoff;
pub mod health;
pub mod pipeline;
pub mod ratelimit;
pub mod record;
pub mod send;
pub mod worker;
