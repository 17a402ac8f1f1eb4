-- Number allocation: the next free sequence per (year, province, channel).
CREATE TABLE sequences (
    year INTEGER NOT NULL,
    province INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    next INTEGER NOT NULL,
    PRIMARY KEY (year, province, channel)
);

-- Ranges granted, per uploader (platform or agent identity).
CREATE TABLE ranges (
    id INTEGER PRIMARY KEY,
    uploader TEXT NOT NULL,
    year INTEGER NOT NULL,
    province INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    granted_at INTEGER NOT NULL
);
CREATE INDEX ranges_uploader ON ranges (uploader, year, province, channel);

-- Accepted invoices: one row per number, ever.
CREATE TABLE invoices (
    number TEXT PRIMARY KEY,
    uploader TEXT NOT NULL,
    seller TEXT NOT NULL,
    kind TEXT NOT NULL,
    blue_number TEXT,
    issued_on TEXT NOT NULL,
    total TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    record TEXT NOT NULL,
    receipt TEXT NOT NULL,
    accepted_at INTEGER NOT NULL
);
CREATE INDEX invoices_blue ON invoices (blue_number);

-- Every upload and its outcome (accepted, duplicate, processing, failed with a code).
CREATE TABLE upload_log (
    id INTEGER PRIMARY KEY,
    number TEXT NOT NULL,
    uploader TEXT NOT NULL,
    status TEXT NOT NULL,
    code TEXT,
    content_hash TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX upload_log_number ON upload_log (number);
