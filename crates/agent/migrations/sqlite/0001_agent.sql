-- Orders the agent handled, by order id: issued (with the number) or refused (with why). A
-- leased order already here is only acknowledged again, never issued twice.
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('blue', 'red')),
    request_hash TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('issued', 'refused')),
    number TEXT,
    refusal TEXT,
    handled_at INTEGER NOT NULL
);

-- Invoices issued here (record: the signed invoice, sealed). `upload` is tax's answer so far.
CREATE TABLE invoices (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    number TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL UNIQUE,
    request_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    blue_number TEXT,
    form TEXT,
    issued_at TEXT NOT NULL,
    total TEXT NOT NULL,
    record TEXT NOT NULL,
    upload TEXT NOT NULL CHECK (upload IN ('pending', 'accepted', 'failed')),
    upload_reason TEXT,
    receipt TEXT
);
CREATE INDEX invoices_blue ON invoices (blue_number);

-- Number blocks platform granted (key: the idempotency key used to ask for it).
CREATE TABLE blocks (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    year INTEGER NOT NULL,
    province INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    next INTEGER NOT NULL
);

-- Credit quota per month (YYYY-MM, China time): granted by platform, used by invoices here
-- (blue adds, red gives back). Not usable across months.
CREATE TABLE quota (
    month TEXT PRIMARY KEY,
    granted TEXT NOT NULL,
    used TEXT NOT NULL,
    requests INTEGER NOT NULL
);

-- Red-letter forms opened here: the daily sequence (from 90000001, apart from platform's).
CREATE TABLE forms (
    day TEXT PRIMARY KEY,
    next INTEGER NOT NULL
);

-- Work to do, in id order: upload (to tax), report (invoice to platform), status (tax's
-- receipt to platform), ack (to cloud). Written in the transaction that made the work.
CREATE TABLE queue (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('upload', 'report', 'status', 'ack')),
    subject TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    done_at INTEGER
);
CREATE INDEX queue_due ON queue (state, kind, id);

-- Orders leased from cloud, stored (sealed) before they are issued; removed in the issue's
-- transaction.
CREATE TABLE pulled (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    pulled_at INTEGER NOT NULL
);
