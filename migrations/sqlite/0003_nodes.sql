-- Nodes that run the scheduler, with their heartbeats (one row per process start).
CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    hostname    TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    stopped_at  INTEGER
);
CREATE INDEX timers_claims ON timers (claimed_by, state);
