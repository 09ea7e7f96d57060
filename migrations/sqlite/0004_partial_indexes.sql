-- Index entries only for the rows the queries look for, so the hot writes skip them:
-- a timer is claimed only on PostgreSQL (several nodes; SQLite claims by reading), and
-- an event written with its deliveries (a fired timer, a group commit) is fanned out
-- from the start. Both queries name the rows the way the index does
-- (`claimed_by = $n`, `fanned_out = 0`).
DROP INDEX timers_claims;
CREATE INDEX timers_claims ON timers (claimed_by, state) WHERE claimed_by IS NOT NULL;
DROP INDEX events_to_fan_out;
CREATE INDEX events_to_fan_out ON events (seq) WHERE fanned_out = 0;
