//! Endpoint health: what one attempt's result does to its endpoint. Failed attempts in
//! a row, failing since when, deliveries failed for good in a row, the circuit
//! breaker, auto-disable, and which alerts (failing, disabled, recovered) to send.
//! Pure: the caller stores the result in the attempt's transaction.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::endpoint::Health;
use crate::config::{AlertsConfig, DeliveryConfig};

/// The thresholds, from `[delivery]` and `[alerts]`.
#[derive(Clone, Debug)]
pub struct HealthPolicy {
    pub failing_after_attempts: u32,
    pub disable_after_failed_deliveries: u32,
    pub disable_after_failing_hours: u32,
    pub circuit_breaker_failures: u32,
    pub circuit_cooldown: Duration,
}

impl HealthPolicy {
    pub fn from_config(delivery: &DeliveryConfig, alerts: &AlertsConfig) -> Self {
        Self {
            failing_after_attempts: alerts.failing_after_attempts.max(1),
            disable_after_failed_deliveries: delivery.disable_after_failed_deliveries,
            disable_after_failing_hours: delivery.disable_after_failing_hours,
            circuit_breaker_failures: delivery.circuit_breaker_failures,
            circuit_cooldown: Duration::from_secs(delivery.circuit_breaker_cooldown_seconds),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertKind {
    Failing,
    Disabled,
    Recovered,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Failing => "failing",
            AlertKind::Disabled => "disabled",
            AlertKind::Recovered => "recovered",
        }
    }
}

/// What happened in the attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Success,
    /// Failed; `final_` when the delivery has no attempt left, `disable` when the
    /// endpoint asked to be disabled then (`retry.on_exhausted = "disable"`).
    Failed {
        final_: bool,
        disable: bool,
    },
    /// 410 Gone: the receiver wants nothing more.
    Gone,
}

/// The endpoint's new health, whether to disable it (and why), and the alerts to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub health: Health,
    pub disable: Option<String>,
    pub alerts: Vec<(AlertKind, String)>,
}

pub fn after_attempt(
    old: &Health,
    policy: &HealthPolicy,
    now: DateTime<Utc>,
    result: AttemptResult,
) -> Change {
    let mut alerts = Vec::new();
    if result == AttemptResult::Success {
        if old.alert_state != "ok" {
            alerts.push((
                AlertKind::Recovered,
                "the endpoint accepted a webhook again".to_string(),
            ));
        }
        return Change {
            health: Health {
                alert_state: "ok".into(),
                ..Health::default()
            },
            disable: None,
            alerts,
        };
    }
    let mut h = old.clone();
    h.failed_attempts += 1;
    let since = *h.failing_since.get_or_insert(now);
    if matches!(
        result,
        AttemptResult::Failed {
            final_: true,
            disable: false
        } | AttemptResult::Gone
    ) {
        h.failed_deliveries += 1;
    }
    if policy.circuit_breaker_failures > 0
        && h.failed_attempts >= i64::from(policy.circuit_breaker_failures)
    {
        h.circuit_open_until = Some(
            now + TimeDelta::from_std(policy.circuit_cooldown).unwrap_or(TimeDelta::minutes(1)),
        );
    }
    if h.alert_state == "ok" && h.failed_attempts >= i64::from(policy.failing_after_attempts) {
        h.alert_state = "failing".into();
        alerts.push((
            AlertKind::Failing,
            format!(
                "{} attempts in a row failed (failing since {})",
                h.failed_attempts,
                since.to_rfc3339()
            ),
        ));
    }
    let disable = if result == AttemptResult::Gone {
        Some("the endpoint answered 410 Gone".to_string())
    } else if matches!(
        result,
        AttemptResult::Failed {
            final_: true,
            disable: true
        }
    ) {
        Some("a delivery used up its retries (retry.on_exhausted = \"disable\")".to_string())
    } else if policy.disable_after_failed_deliveries > 0
        && h.failed_deliveries >= i64::from(policy.disable_after_failed_deliveries)
    {
        Some(format!(
            "{} deliveries in a row failed after every retry",
            h.failed_deliveries
        ))
    } else if policy.disable_after_failing_hours > 0
        && now - since >= TimeDelta::hours(i64::from(policy.disable_after_failing_hours))
    {
        Some(format!(
            "every attempt failed for {} hours (since {})",
            policy.disable_after_failing_hours,
            since.to_rfc3339()
        ))
    } else {
        None
    };
    if let Some(reason) = &disable {
        h.alert_state = "disabled".into();
        h.circuit_open_until = None;
        alerts.push((AlertKind::Disabled, reason.clone()));
    }
    Change {
        health: h,
        disable,
        alerts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            failing_after_attempts: 2,
            disable_after_failed_deliveries: 2,
            disable_after_failing_hours: 10,
            circuit_breaker_failures: 3,
            circuit_cooldown: Duration::from_secs(60),
        }
    }

    fn ok() -> Health {
        Health {
            alert_state: "ok".into(),
            ..Health::default()
        }
    }

    #[test]
    fn failing_then_disabled_then_recovered() {
        let now = DateTime::from_timestamp(1_900_000_000, 0).expect("valid");
        let p = policy();
        let c = after_attempt(
            &ok(),
            &p,
            now,
            AttemptResult::Failed {
                final_: false,
                disable: false,
            },
        );
        assert!(c.alerts.is_empty() && c.disable.is_none());
        let c = after_attempt(
            &c.health,
            &p,
            now,
            AttemptResult::Failed {
                final_: true,
                disable: false,
            },
        );
        assert_eq!(c.alerts[0].0, AlertKind::Failing);
        let c = after_attempt(
            &c.health,
            &p,
            now,
            AttemptResult::Failed {
                final_: true,
                disable: false,
            },
        );
        assert!(
            c.health.circuit_open_until.is_none(),
            "closed when disabled"
        );
        assert_eq!(c.alerts[0].0, AlertKind::Disabled);
        assert!(c.disable.is_some());
        let c = after_attempt(&c.health, &p, now, AttemptResult::Success);
        assert_eq!(c.alerts[0].0, AlertKind::Recovered);
        assert_eq!(c.health, ok());
    }

    #[test]
    fn exhausted_delivery_disables_when_asked() {
        let now = DateTime::from_timestamp(1_900_000_000, 0).expect("valid");
        let failed = AttemptResult::Failed {
            final_: true,
            disable: true,
        };
        let c = after_attempt(&ok(), &policy(), now, failed);
        assert!(c.disable.is_some_and(|r| r.contains("on_exhausted")));
    }

    #[test]
    fn gone_disables_and_hours_disable() {
        let now = DateTime::from_timestamp(1_900_000_000, 0).expect("valid");
        let c = after_attempt(&ok(), &policy(), now, AttemptResult::Gone);
        assert!(c.disable.is_some_and(|r| r.contains("410")));
        let c = after_attempt(
            &ok(),
            &policy(),
            now,
            AttemptResult::Failed {
                final_: false,
                disable: false,
            },
        );
        let later = now + TimeDelta::hours(10);
        let c = after_attempt(
            &c.health,
            &policy(),
            later,
            AttemptResult::Failed {
                final_: false,
                disable: false,
            },
        );
        assert!(c.disable.is_some_and(|r| r.contains("10 hours")));
    }
}
