-- One event per timer, kept by a unique index of the fired events alone. Immediate
-- events (every change: `reservation.reserve`, `order.checkout`, …) have no timer, and
-- a unique constraint on the column would still write an index entry for each of them,
-- a NULL that no query reads. Every query that names `timer_id` compares it with a
-- value (`timer_id = …`), which the partial index answers.
ALTER TABLE events DROP CONSTRAINT events_timer_id_key;
CREATE UNIQUE INDEX events_by_timer ON events (timer_id) WHERE timer_id IS NOT NULL;
