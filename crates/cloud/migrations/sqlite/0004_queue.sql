-- Hosting mode of a tenant: 'platform' (sync: orders go to platform) or 'enterprise' (async:
-- orders wait here for the enterprise's agent).
ALTER TABLE enterprises ADD COLUMN hosting TEXT NOT NULL DEFAULT 'platform'
    CHECK (hosting IN ('platform', 'enterprise'));

-- Orders of enterprise-hosted tenants, waiting for their agent. `body` is the sealed order
-- (buyer data). queued → leased (to an agent until lease_until) → handled (the agent stored
-- the invoice; it arrives through platform) → issued; or → refused (the agent's reason).
CREATE TABLE queued_orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    enterprise TEXT NOT NULL REFERENCES enterprises (taxpayer_id),
    order_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('blue', 'red')),
    request_hash TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'handled', 'issued', 'refused')),
    leased_to TEXT,
    lease_until INTEGER,
    leases INTEGER NOT NULL DEFAULT 0,
    number TEXT,
    refusal TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (enterprise, order_id)
);
CREATE INDEX queued_orders_due ON queued_orders (enterprise, state, seq);
