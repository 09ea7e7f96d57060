-- A timer holds its moment (entity, fire instant, rule) while it is pending or fired:
-- planning the same moment again is a no-op, and a fired moment is never planned
-- again. The entity index itself says so, as a unique index whose last column,
-- `live`, is 1 while the timer holds its moment and NULL once it is cancelled or
-- skipped (NULLs never collide in a unique index, so any number of closed timers may
-- share a moment). One index serves both the queries by entity and the uniqueness:
-- every planned timer writes one index entry fewer, and no key text.
ALTER TABLE timers ADD COLUMN live INTEGER;
UPDATE timers SET live = 1 WHERE plan_key IS NOT NULL;
DROP INDEX timers_plan_key;
DROP INDEX timers_by_entity;
ALTER TABLE timers DROP COLUMN plan_key;
CREATE UNIQUE INDEX timers_by_entity ON timers (entity_kind, entity_id, fire_at, rule, live);
