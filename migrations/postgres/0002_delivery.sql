-- Delivery pipeline (PostgreSQL): endpoints, one delivery per (event, endpoint), the
-- attempts of each delivery, and the alerts waiting to be sent.
-- Instants are BIGINT milliseconds since the Unix epoch, UTC; JSON documents are TEXT.

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
    previous_secret_until  BIGINT,
    headers                TEXT NOT NULL,          -- JSON object of extra request headers
    retry_schedule         TEXT NOT NULL,          -- JSON array of delays in ms (attempt 1 first)
    on_exhausted           TEXT NOT NULL DEFAULT 'fail',  -- fail | disable (the endpoint)
    timeout_ms             BIGINT NOT NULL,
    rate_limit             BIGINT,                -- messages per second; NULL: unlimited
    alert_emails           TEXT NOT NULL,          -- JSON array
    enabled                BIGINT NOT NULL DEFAULT 1,
    disabled_reason        TEXT,
    failing_since          BIGINT,                -- first failed attempt since the last success
    failed_attempts        BIGINT NOT NULL DEFAULT 0,  -- failed attempts in a row
    failed_deliveries      BIGINT NOT NULL DEFAULT 0,  -- deliveries failed for good in a row
    circuit_open_until     BIGINT,
    alert_state            TEXT NOT NULL DEFAULT 'ok',  -- ok | failing | disabled
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

CREATE TABLE deliveries (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    event_id         TEXT NOT NULL REFERENCES events(id),
    endpoint_id      TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    event_type       TEXT NOT NULL,
    status           TEXT NOT NULL,                -- pending | succeeded | failed
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    claimed_by       TEXT,
    lease_until      BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, seq);

CREATE TABLE attempts (
    id                BIGSERIAL PRIMARY KEY,
    delivery_id       TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    number            BIGINT NOT NULL,
    started_at        BIGINT NOT NULL,
    duration_ms       BIGINT NOT NULL,
    status_code       BIGINT,
    error_kind        TEXT,                        -- timeout | connect | tls | dns | refused | other
    error             TEXT,
    response_headers  TEXT NOT NULL,               -- JSON object of the headers of interest
    response_body     TEXT NOT NULL                -- first 4 KiB, lossy UTF-8
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, id);

-- Alerts are written in the transaction that changes the endpoint's health, and sent
-- (email, alert webhook) by the alert worker afterwards.
CREATE TABLE alerts (
    id           BIGSERIAL PRIMARY KEY,
    endpoint_id  TEXT NOT NULL,
    kind         TEXT NOT NULL,                    -- failing | disabled | recovered
    detail       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    sent_at      BIGINT,
    tries        BIGINT NOT NULL DEFAULT 0,
    next_try_at  BIGINT NOT NULL
);
CREATE INDEX alerts_unsent ON alerts (sent_at, next_try_at);
