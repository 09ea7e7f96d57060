-- duehook schema (SQLite). Instants are INTEGER milliseconds since the Unix epoch, UTC.
-- JSON documents are TEXT. Every state change that matters is one transaction.

CREATE TABLE contacts (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL,           -- the input as received (canonical JSON), for idempotency
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE items (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    expires_at  INTEGER,
    expired     INTEGER NOT NULL DEFAULT 0,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE reservations (
    id          TEXT PRIMARY KEY,
    contact_id  TEXT NOT NULL,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    timezone    TEXT,
    status      TEXT NOT NULL,           -- reserved | cancelled | picked_up
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    contact_id      TEXT NOT NULL,
    due_at          INTEGER NOT NULL,
    reservation_id  TEXT,
    timezone        TEXT,
    status          TEXT NOT NULL,       -- open | checked_out | closed
    checked_out_at  INTEGER,
    closed_at       INTEGER,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE order_items (
    order_id       TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    item_id        TEXT NOT NULL,
    position       INTEGER NOT NULL,
    checked_in_at  INTEGER,
    PRIMARY KEY (order_id, item_id)
);

CREATE TABLE unit_rentals (
    id          TEXT PRIMARY KEY,
    timezone    TEXT,
    overdue     INTEGER NOT NULL DEFAULT 0,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE invoices (
    id              TEXT PRIMARY KEY,
    unit_rental_id  TEXT NOT NULL,
    due_at          INTEGER NOT NULL,
    state           TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX invoices_by_rental ON invoices (unit_rental_id);

-- The outbox: one row per event, immediate or time-based.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    type          TEXT NOT NULL,
    entity_kind   TEXT NOT NULL,
    entity_id     TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    scheduled_at  INTEGER,
    timer_id      INTEGER UNIQUE,        -- exactly one event per timer
    data          TEXT NOT NULL,
    fanned_out    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_by_entity ON events (entity_kind, entity_id, seq);
CREATE INDEX events_to_fan_out ON events (fanned_out, seq);

-- Planned time-based events. The truth; the in-memory wheel only mirrors what is due soon.
CREATE TABLE timers (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_kind  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    rule         TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    anchor_at    INTEGER NOT NULL,
    fire_at      INTEGER NOT NULL,
    state        TEXT NOT NULL,          -- pending | fired | cancelled | skipped
    reason       TEXT,
    event_id     TEXT,
    plan_key     TEXT,                   -- unique while pending: makes planning idempotent
    claimed_by   TEXT,
    lease_until  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX timers_plan_key ON timers (plan_key);
CREATE INDEX timers_pending ON timers (state, fire_at);
CREATE INDEX timers_by_entity ON timers (entity_kind, entity_id, state, fire_at);
