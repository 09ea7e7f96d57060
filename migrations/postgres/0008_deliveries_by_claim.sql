-- The deliveries a node holds: its heartbeat renews their leases, and a survivor
-- releases them when the node is dead. Entries only for claimed rows (a claim is
-- short: from its claim to its recorded attempt), so most rows are not in it.
CREATE INDEX deliveries_claims ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;
