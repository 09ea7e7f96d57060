-- A timer's entity index without its state: firing a timer (pending -> fired) no
-- longer moves its entry, one of the writes every fired timer paid for. The queries by
-- entity (an entity has a handful of timers) filter the state on the rows and still
-- read them in `fire_at` order from the index.
DROP INDEX timers_by_entity;
CREATE INDEX timers_by_entity ON timers (entity_kind, entity_id, fire_at);
