-- Ordered delivery. An endpoint's `ordering` ('none', 'entity', 'endpoint') and what the
-- head of a key does when it fails for good ('move_on' to the next, or 'hold' the key).
-- A delivery's `order_key` is its endpoint's key for it when it was created (NULL:
-- unordered); `held` marks a delivery failed for good that holds its key until an
-- operator retries or skips it. The index finds what waits ahead of a delivery in its
-- key: the pending ones and the held ones.
ALTER TABLE endpoints ADD COLUMN ordering TEXT NOT NULL DEFAULT 'none';
ALTER TABLE endpoints ADD COLUMN ordering_on_failure TEXT NOT NULL DEFAULT 'move_on';
ALTER TABLE deliveries ADD COLUMN order_key TEXT;
ALTER TABLE deliveries ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
CREATE INDEX deliveries_in_order ON deliveries (endpoint_id, order_key, seq)
    WHERE order_key IS NOT NULL AND (status = 'pending' OR held = 1);
