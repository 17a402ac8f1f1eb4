-- Tenants and their ERP API credentials.
CREATE TABLE enterprises (
    taxpayer_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_id TEXT NOT NULL UNIQUE,
    secret TEXT NOT NULL,
    webhook_url TEXT,
    created_at INTEGER NOT NULL
);

-- Nonces of signed ERP requests, kept for the timestamp window.
CREATE TABLE api_nonces (
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX api_nonces_expiry ON api_nonces (expires_at);

-- Invoices received back from the platform; (enterprise, order_id) is the idempotency key.
CREATE TABLE invoices (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    number TEXT NOT NULL UNIQUE,
    enterprise TEXT NOT NULL REFERENCES enterprises (taxpayer_id),
    order_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    blue_number TEXT,
    form TEXT,
    issued_at TEXT NOT NULL,
    buyer_name TEXT NOT NULL,
    buyer_id TEXT,
    total TEXT NOT NULL,
    tax_status TEXT NOT NULL,
    tax_reason TEXT,
    receipt TEXT,
    record TEXT NOT NULL,
    UNIQUE (enterprise, order_id)
);
CREATE INDEX invoices_listing ON invoices (enterprise, seq);
