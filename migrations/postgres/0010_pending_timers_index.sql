-- The due index holds pending timers only, by their instant: planning a timer adds
-- one small entry (no state text), and firing, cancelling or skipping it deletes that
-- entry. An import whose timers arrive in no particular time order writes its
-- entries all over this index, so every byte per entry counts. Every query for due
-- timers names the rows as the index does (`state = 'pending'`, a literal).
--
-- Closed timers (fired, cancelled, skipped: the history) get an index of their own by
-- state and instant, for the schedule view and the console; a query for them names
-- `state <> 'pending'` beside its state so that either database picks it.
DROP INDEX timers_pending;
CREATE INDEX timers_pending ON timers (fire_at) WHERE state = 'pending';
CREATE INDEX timers_closed ON timers (state, fire_at) WHERE state <> 'pending';
