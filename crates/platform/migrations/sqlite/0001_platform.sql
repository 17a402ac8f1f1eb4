-- Connected cloud platforms, identified by their certificates (`cloud:<name>`).
CREATE TABLE clouds (
    identity TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    registered_at INTEGER NOT NULL
);

-- Enterprises and their qualification.
CREATE TABLE enterprises (
    taxpayer_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    cloud TEXT NOT NULL REFERENCES clouds (identity),
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    hosting TEXT NOT NULL CHECK (hosting IN ('platform', 'enterprise')),
    allowed_types TEXT NOT NULL,
    invoice_limit TEXT NOT NULL,
    monthly_quota TEXT NOT NULL,
    province INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Issued total (blue minus red) per enterprise and month (YYYY-MM, China time).
CREATE TABLE quota_usage (
    enterprise TEXT NOT NULL REFERENCES enterprises (taxpayer_id),
    month TEXT NOT NULL,
    used TEXT NOT NULL,
    PRIMARY KEY (enterprise, month)
);

-- Ranges tax granted to this platform; blocks are carved from them.
CREATE TABLE ranges (
    id INTEGER PRIMARY KEY,
    year INTEGER NOT NULL,
    province INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    next INTEGER NOT NULL,
    granted_at INTEGER NOT NULL
);

-- Blocks handed to hosted issuing devices (one device per enterprise).
CREATE TABLE blocks (
    id INTEGER PRIMARY KEY,
    enterprise TEXT NOT NULL REFERENCES enterprises (taxpayer_id),
    year INTEGER NOT NULL,
    province INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    next INTEGER NOT NULL
);
CREATE INDEX blocks_enterprise ON blocks (enterprise, year, province);

-- Orders by (enterprise, order_id): the idempotency record, kept as long as the order.
CREATE TABLE orders (
    enterprise TEXT NOT NULL,
    order_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    number TEXT NOT NULL,
    PRIMARY KEY (enterprise, order_id)
);

-- Issued invoices (wire JSON: record + device signature).
CREATE TABLE invoices (
    number TEXT PRIMARY KEY,
    enterprise TEXT NOT NULL,
    order_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    blue_number TEXT,
    form_number TEXT,
    issued_at TEXT NOT NULL,
    total TEXT NOT NULL,
    record TEXT NOT NULL,
    tax_status TEXT NOT NULL,
    tax_reason TEXT,
    receipt TEXT
);
CREATE INDEX invoices_blue ON invoices (blue_number);

-- Red-letter confirmation forms (红字发票信息确认单).
CREATE TABLE red_forms (
    number TEXT PRIMARY KEY,
    blue_number TEXT NOT NULL,
    enterprise TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    scope TEXT NOT NULL,
    buyer_confirmation TEXT,
    created_at INTEGER NOT NULL
);

-- Numbers consumed by an issue that failed: recorded, never reused.
CREATE TABLE void_numbers (
    number TEXT PRIMARY KEY,
    enterprise TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);

-- The outbox: uploads to tax and status notices to clouds, written with the change.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('upload', 'notify')),
    number TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    done_at INTEGER
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
