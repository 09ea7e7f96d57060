-- The due index holds pending deliveries only: recording a success (pending ->
-- succeeded, what almost every webhook ends in) deletes its entry instead of moving it
-- to ('succeeded', NULL), where no query looked. Every query for due work names the
-- rows as the index does (`status = 'pending'`, a literal).
--
-- Failed deliveries (rare: retries exhausted) get an index of their own, newest first,
-- for `GET /v1/deliveries?status=failed`. Succeeded ones, the bulk, are listed by
-- reading the table from its newest row: they are most of what is there.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_failed ON deliveries (seq) WHERE status = 'failed';
