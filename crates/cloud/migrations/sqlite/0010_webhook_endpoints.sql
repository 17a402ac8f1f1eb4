-- Webhook endpoints an ERP registers through the API (`/v1/webhook-endpoints`): where to
-- send which events, signed with the endpoint's own secret (sealed). Deleted ones stay, marked,
-- so that their delivery log can still be read.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    enterprise TEXT NOT NULL REFERENCES enterprises (taxpayer_id),
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE INDEX webhook_endpoints_enterprise ON webhook_endpoints (enterprise, deleted_at);

-- Events, one row each, written in the transaction of the change (for enterprises with a
-- subscriber then); the worker fans each out to the subscribed endpoints' deliveries.
-- `number`: the invoice (invoice events); `payload`: the event's data otherwise (JSON).
CREATE TABLE webhook_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    enterprise TEXT NOT NULL REFERENCES enterprises (taxpayer_id),
    event TEXT NOT NULL,
    number TEXT,
    payload TEXT,
    created_at INTEGER NOT NULL,
    fanned INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_events_unfanned ON webhook_events (fanned, id);

-- Deliveries (`webhooks`): to an endpoint (NULL: the enterprise's own URL, set by the
-- operator and signed with the API secret), of an event (NULL: rows from before events had
-- rows), retried until `give_up_at` (NULL: created_at plus the configured period).
ALTER TABLE webhooks ADD COLUMN endpoint TEXT;
ALTER TABLE webhooks ADD COLUMN event_id INTEGER;
ALTER TABLE webhooks ADD COLUMN payload TEXT;
ALTER TABLE webhooks ADD COLUMN give_up_at INTEGER;
CREATE INDEX webhooks_endpoint ON webhooks (endpoint, id);
UPDATE webhooks SET event = 'invoice.tax_status_changed' WHERE event = 'invoice.tax_status';

-- Every attempt of a delivery, for the endpoint's delivery log.
CREATE TABLE webhook_attempts (
    delivery INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery, attempt)
);

-- A blue invoice's reds, read with the blue (what remains to reverse).
CREATE INDEX invoices_blue ON invoices (blue_number) WHERE blue_number IS NOT NULL;
