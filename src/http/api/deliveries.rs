//! Bodies of the delivery routes: a delivery and its attempts as the API shows them,
//! a page of them, and the filters of the list.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::ingest::Event;
use crate::http::error::ApiError;
use crate::store::deliveries::{self as rows, Filter, Status};

/// A delivery as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Attempts made so far.
    pub attempt_count: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// On an ordered endpoint, the key this delivery goes out in, after the earlier
    /// deliveries of the same key (`order/o-1` for entity ordering, `*` for endpoint
    /// ordering); null when unordered.
    pub order_key: Option<String>,
    /// Failed for good and holding its key: the key's later deliveries wait until this
    /// one is retried (`POST /v1/deliveries/{id}/retry`) or skipped
    /// (`POST /v1/deliveries/{id}/skip`).
    pub held: bool,
}

impl From<rows::Delivery> for Delivery {
    fn from(d: rows::Delivery) -> Self {
        let rows::Delivery {
            id,
            event_id,
            endpoint_id,
            event_type,
            status,
            attempts,
            next_attempt_at,
            last_status,
            last_error,
            created_at,
            updated_at,
            seq: _,
            order_key,
            held,
        } = d;
        Self {
            id,
            event_id,
            endpoint_id,
            event_type,
            status,
            attempt_count: attempts,
            next_attempt_at,
            last_status,
            last_error,
            created_at,
            updated_at,
            order_key,
            held,
        }
    }
}

/// One attempt at a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    pub number: i64,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    /// `timeout`, `connect`, `tls`, `dns`, `refused` or `other` when no response came.
    pub error_kind: Option<String>,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub response_headers: Value,
    pub response_body: String,
}

impl From<rows::Attempt> for Attempt {
    fn from(a: rows::Attempt) -> Self {
        let rows::Attempt {
            number,
            started_at,
            duration_ms,
            status_code,
            error_kind,
            error,
            response_headers,
            response_body,
        } = a;
        Self {
            number,
            started_at,
            duration_ms,
            status_code,
            error_kind,
            error,
            response_headers,
            response_body,
        }
    }
}

/// `GET /v1/deliveries`: newest first.
#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next, older page; null on the last page.
    pub next_cursor: Option<String>,
}

impl DeliveryPage {
    /// A page read with `filter`: a full page has a next one (which may be empty).
    pub fn new(page: Vec<rows::Delivery>, filter: &Filter) -> Self {
        let next_cursor = (page.len() as i64 == filter.limit)
            .then(|| page.last().map(|d| d.seq.to_string()))
            .flatten();
        Self {
            deliveries: page.into_iter().map(Delivery::from).collect(),
            next_cursor,
        }
    }
}

/// `GET /v1/deliveries/{id}`: the delivery, its attempts and its event.
#[derive(Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
    /// The event in the standard envelope (before the endpoint's format and envelope).
    pub event: Option<Event>,
}

impl From<crate::delivery::service::DeliveryDetail> for DeliveryDetail {
    fn from(d: crate::delivery::service::DeliveryDetail) -> Self {
        Self {
            delivery: d.delivery.into(),
            attempts: d.attempts.into_iter().map(Attempt::from).collect(),
            event: d.event.map(Event::from),
        }
    }
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// The filters of `GET /v1/deliveries` (any other parameter is refused with 422).
#[allow(
    dead_code,
    reason = "documents the parameters; `parse` reads them into the store's filter"
)]
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only this endpoint's deliveries.
    pub endpoint_id: Option<String>,
    /// `pending`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// Only deliveries of this event type.
    pub event_type: Option<String>,
    /// Only deliveries created at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl DeliveryQuery {
    /// Reads the query string into the store's filter, naming the first parameter at
    /// fault.
    pub fn parse(query: Option<&str>) -> Result<Filter, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::invalid("query", e.to_string()))?;
        let mut f = Filter {
            limit: DEFAULT_LIMIT,
            ..Filter::default()
        };
        for (key, value) in pairs {
            match key.as_str() {
                "endpoint_id" => f.endpoint_id = Some(value),
                "event_type" => f.event_type = Some(value),
                "status" => {
                    let Some(status) = Status::parse(&value) else {
                        return Err(ApiError::invalid(
                            "status",
                            "one of pending, succeeded, failed",
                        ));
                    };
                    f.status = Some(status);
                }
                "since" => {
                    let t = DateTime::parse_from_rfc3339(&value).map_err(|e| {
                        ApiError::invalid("since", format!("not an RFC 3339 instant: {e}"))
                    })?;
                    f.since = Some(t.with_timezone(&Utc));
                }
                "limit" => {
                    f.limit = value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid("limit", format!("a number from 1 to {MAX_LIMIT}"))
                        })?;
                }
                "cursor" => {
                    f.before_seq = Some(value.parse::<i64>().map_err(|_| {
                        ApiError::invalid("cursor", "use the next_cursor of the previous page")
                    })?);
                }
                other => {
                    return Err(ApiError::invalid(
                        other,
                        "unknown parameter (endpoint_id, status, event_type, since, limit, cursor)",
                    ));
                }
            }
        }
        Ok(f)
    }
}
