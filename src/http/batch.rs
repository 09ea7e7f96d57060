//! `POST /v1/batch`: many ingest operations in one request. Each operation names an
//! ingest route (method, path, body) and is translated exactly as that route's handler
//! translates its request; the ingest service applies them all, in order, many per
//! transaction. Each gets the result its own route would have answered.
//!
//! `Prefer: return=minimal` (RFC 7240) leaves the body out of every applied
//! operation's result: an import that only checks statuses then neither pays for
//! thousands of entities serialised back nor reads them. Failed operations keep their
//! error body either way.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;

use super::AppState;
use super::api::ingest::{
    BatchOperation, BatchRequest, BatchResponse, BatchResult, CheckinInput, Contact, ContactInput,
    Event, Invoice, InvoiceInput, Item, ItemInput, Order, OrderInput, OrderPatch, PostEvent,
    Reservation, ReservationInput, UnitRental, UnitRentalInput,
};
use super::api::responses::{BodyErrors, StoreErrors};
use super::error::ApiError;
use super::ingest::status_of;
use super::json;
use crate::ingest::{Ingest, MAX_BATCH_OPS, Op, Outcome};

#[utoipa::path(
    post,
    path = "/v1/batch",
    tag = "ingest",
    request_body = BatchRequest,
    params(
        ("Prefer" = Option<String>, Header, description = "`return=minimal`: applied operations' results carry their status only", example = "return=minimal")
    ),
    responses(
        (status = 200, description = "One result per operation, in order, each what its own route would answer; every applied operation is committed. With `Prefer: return=minimal` an applied operation's result has no body (and the answer says `Preference-Applied: return=minimal`)", body = BatchResponse),
        BodyErrors,
        StoreErrors
    )
)]
pub async fn batch(State(s): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let minimal = prefers_minimal(req.headers());
    let bytes = json::body_bytes(req, &s, "[server] max_batch_bytes").await?;
    let body: BatchRequest = json::parse_request(&bytes)?;
    if body.operations.len() > MAX_BATCH_OPS {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            ..ApiError::invalid(
                "operations",
                format!(
                    "{} operations: a batch carries at most {MAX_BATCH_OPS}",
                    body.operations.len()
                ),
            )
        });
    }
    let mut results: Vec<Option<BatchResult>> = Vec::with_capacity(body.operations.len());
    let mut ops = Vec::with_capacity(body.operations.len());
    for raw in &body.operations {
        match translate(raw, &s.ingest) {
            Ok(op) => {
                ops.push(op);
                results.push(None);
            }
            Err(e) => results.push(Some(error_result(e))),
        }
    }
    drop(body);
    let mut applied = s.ingest.apply(ops).await.into_iter();
    let results = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| match applied.next() {
                Some(Ok(outcome)) => outcome_result(outcome, minimal),
                Some(Err(e)) => error_result(e.into()),
                None => error_result(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an operation went unanswered",
                )),
            })
        })
        .collect();
    let mut res = Json(BatchResponse { results }).into_response();
    if minimal {
        res.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("return=minimal"),
        );
    }
    Ok(res)
}

/// Whether the request's `Prefer` headers ask for `return=minimal` (RFC 7240: a
/// comma-separated list, each preference a token, optionally `=value`, then
/// `;`-separated parameters; names are case-insensitive, values may be quoted).
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|pref| {
            let pref = pref.split(';').next().unwrap_or_default();
            let (name, value) = pref.split_once('=').unwrap_or((pref, ""));
            name.trim().eq_ignore_ascii_case("return")
                && value
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("minimal")
        })
}

/// The ingest routes a batch may name, for the error that names another.
const ROUTES: &str = "PUT /v1/reservations/{id}, POST /v1/reservations/{id}/cancel, \
PUT|PATCH /v1/orders/{id}, POST /v1/orders/{id}/checkout|checkin|undo-checkout, \
PUT /v1/unit-rentals/{id}, PUT /v1/invoices/{id}, PUT /v1/items/{id}, \
PUT /v1/contacts/{id}, POST /v1/events";

/// One operation, as its own route's handler would read it.
fn translate(raw: &RawValue, ingest: &Ingest) -> Result<Op, ApiError> {
    let op: BatchOperation = json::parse(raw.get().as_bytes())?;
    let body = op.body.as_deref().map_or(&b""[..], |b| b.get().as_bytes());
    let segments: Vec<&str> = match op.path.strip_prefix("/v1/") {
        Some(rest) => rest.split('/').collect(),
        None => Vec::new(),
    };
    let method = op.method.to_ascii_uppercase();
    let id = |s: &str| {
        percent_decode(s).ok_or_else(|| ApiError::invalid("path", "bad percent-encoding in the id"))
    };
    Ok(match (method.as_str(), segments.as_slice()) {
        ("PUT", ["reservations", i]) => {
            Op::PutReservation(id(i)?, json::parse::<ReservationInput>(body)?.into())
        }
        ("POST", ["reservations", i, "cancel"]) => Op::CancelReservation(id(i)?),
        ("PUT", ["orders", i]) => Op::PutOrder(id(i)?, json::parse::<OrderInput>(body)?.into()),
        ("PATCH", ["orders", i]) => Op::PatchOrder(id(i)?, json::parse::<OrderPatch>(body)?.due_at),
        ("POST", ["orders", i, "checkout"]) => Op::Checkout(id(i)?),
        ("POST", ["orders", i, "checkin"]) => {
            Op::Checkin(id(i)?, json::parse::<CheckinInput>(body)?.into())
        }
        ("POST", ["orders", i, "undo-checkout"]) => Op::UndoCheckout(id(i)?),
        ("PUT", ["unit-rentals", i]) => {
            Op::PutUnitRental(id(i)?, json::parse::<UnitRentalInput>(body)?.into())
        }
        ("PUT", ["invoices", i]) => {
            Op::PutInvoice(id(i)?, json::parse::<InvoiceInput>(body)?.into())
        }
        ("PUT", ["items", i]) => Op::PutItem(id(i)?, json::parse::<ItemInput>(body)?.into()),
        ("PUT", ["contacts", i]) => {
            Op::PutContact(id(i)?, json::parse::<ContactInput>(body)?.into())
        }
        ("POST", ["events"]) => {
            let e: PostEvent = json::parse(body)?;
            ingest.event_op(&e.event_type, &e.data)?
        }
        (
            _,
            ["reservations", _]
            | ["reservations", _, "cancel"]
            | ["orders", _]
            | ["orders", _, "checkout" | "checkin" | "undo-checkout"]
            | ["unit-rentals" | "invoices" | "items" | "contacts", _]
            | ["events"],
        ) => {
            return Err(ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                error: "method_not_allowed",
                ..ApiError::invalid(
                    "method",
                    format!(
                        "{} {} is not an ingest operation ({ROUTES})",
                        op.method, op.path
                    ),
                )
            });
        }
        _ => {
            return Err(ApiError::invalid(
                "path",
                format!(
                    "{} is not an ingest route; a batch carries {ROUTES}",
                    op.path
                ),
            ));
        }
    })
}

/// The id in a path segment, percent-decoded as the single routes decode it.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn result(status: StatusCode, body: &impl Serialize) -> BatchResult {
    BatchResult {
        status: status.as_u16(),
        body: Some(
            serde_json::value::to_raw_value(body)
                .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("`null` is JSON")),
        ),
    }
}

fn error_result(e: ApiError) -> BatchResult {
    result(e.status, &e)
}

/// The status the operation's own route answers for `o`.
fn outcome_status(o: &Outcome) -> StatusCode {
    match o {
        Outcome::Reservation(a) => status_of(a),
        Outcome::Order(a) => status_of(a),
        Outcome::UnitRental(a) => status_of(a),
        Outcome::Invoice(a) => status_of(a),
        Outcome::Item(a) => status_of(a),
        Outcome::Contact(a) => status_of(a),
        Outcome::Event(_) => StatusCode::CREATED,
    }
}

/// The result of an applied operation: its route's status and, unless `minimal`, the
/// entity (or event) its route answers with.
fn outcome_result(o: Outcome, minimal: bool) -> BatchResult {
    let status = outcome_status(&o);
    if minimal {
        return BatchResult {
            status: status.as_u16(),
            body: None,
        };
    }
    match o {
        Outcome::Reservation(a) => result(status, &Reservation::from(a.entity)),
        Outcome::Order(a) => result(status, &Order::from(a.entity)),
        Outcome::UnitRental(a) => result(status, &UnitRental::from(a.entity)),
        Outcome::Invoice(a) => result(status, &Invoice::from(a.entity)),
        Outcome::Item(a) => result(status, &Item::from(a.entity)),
        Outcome::Contact(a) => result(status, &Contact::from(a.entity)),
        Outcome::Event(e) => result(status, &Event::from(e)),
    }
}
