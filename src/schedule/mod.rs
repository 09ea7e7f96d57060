//! Time-based events: rules turn entity state into planned timers (stored in the same
//! transaction as the change), the driver loads what is due soon into a timing wheel,
//! sleeps on the Clock, and fires each timer in one transaction that re-checks the
//! entity and writes exactly one event.

pub mod advance;
pub mod cron;
pub mod decide;
pub mod digest;
pub mod driver;
pub mod fire;
pub mod plan;
pub mod rules;
pub mod wheel;
