-- Delivery pipeline (SQLite): endpoints, one delivery per (event, endpoint), the
-- attempts of each delivery, and the alerts waiting to be sent.
-- Instants are INTEGER milliseconds since the Unix epoch, UTC; JSON documents are TEXT.

CREATE TABLE endpoints (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    url                    TEXT NOT NULL,
    topics                 TEXT NOT NULL,          -- JSON array of types and wildcards
    format                 TEXT NOT NULL,          -- json | xml | form
    envelope               TEXT NOT NULL,          -- standard | type_payload | event_entity
    scheme                 TEXT NOT NULL,          -- standard_webhooks | hex | base64
    signature_header       TEXT,
    secret                 TEXT NOT NULL,
    previous_secret        TEXT,                   -- still signs until previous_secret_until
    previous_secret_until  INTEGER,
    headers                TEXT NOT NULL,          -- JSON object of extra request headers
    retry_schedule         TEXT NOT NULL,          -- JSON array of delays in ms (attempt 1 first)
    on_exhausted           TEXT NOT NULL DEFAULT 'fail',  -- fail | disable (the endpoint)
    timeout_ms             INTEGER NOT NULL,
    rate_limit             INTEGER,                -- messages per second; NULL: unlimited
    alert_emails           TEXT NOT NULL,          -- JSON array
    enabled                INTEGER NOT NULL DEFAULT 1,
    disabled_reason        TEXT,
    failing_since          INTEGER,                -- first failed attempt since the last success
    failed_attempts        INTEGER NOT NULL DEFAULT 0,  -- failed attempts in a row
    failed_deliveries      INTEGER NOT NULL DEFAULT 0,  -- deliveries failed for good in a row
    circuit_open_until     INTEGER,
    alert_state            TEXT NOT NULL DEFAULT 'ok',  -- ok | failing | disabled
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);

CREATE TABLE deliveries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    event_id         TEXT NOT NULL REFERENCES events(id),
    endpoint_id      TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    event_type       TEXT NOT NULL,
    status           TEXT NOT NULL,                -- pending | succeeded | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    claimed_by       TEXT,
    lease_until      INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, seq);

CREATE TABLE attempts (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id       TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    number            INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    status_code       INTEGER,
    error_kind        TEXT,                        -- timeout | connect | tls | dns | refused | other
    error             TEXT,
    response_headers  TEXT NOT NULL,               -- JSON object of the headers of interest
    response_body     TEXT NOT NULL                -- first 4 KiB, lossy UTF-8
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, id);

-- Alerts are written in the transaction that changes the endpoint's health, and sent
-- (email, alert webhook) by the alert worker afterwards.
CREATE TABLE alerts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id  TEXT NOT NULL,
    kind         TEXT NOT NULL,                    -- failing | disabled | recovered
    detail       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    sent_at      INTEGER,
    tries        INTEGER NOT NULL DEFAULT 0,
    next_try_at  INTEGER NOT NULL
);
CREATE INDEX alerts_unsent ON alerts (sent_at, next_try_at);
