-- Nodes that run the scheduler, with their heartbeats (one row per process start).
CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    hostname    TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    stopped_at  BIGINT
);
CREATE INDEX timers_claims ON timers (claimed_by, state);
