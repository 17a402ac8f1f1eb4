-- Webhook deliveries, written in the same transaction as the change they announce.
CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY,
    enterprise TEXT NOT NULL REFERENCES enterprises (taxpayer_id),
    event TEXT NOT NULL,
    number TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX webhooks_due ON webhooks (state, next_attempt_at);
