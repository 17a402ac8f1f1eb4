-- A status notice that reached cloud before the invoice it is about (platform's outbox can
-- upload and notify faster than cloud stores the platform's answer to the order). Kept until
-- the invoice is stored, then applied to it and removed.
CREATE TABLE early_notices (
    number TEXT PRIMARY KEY,
    enterprise TEXT NOT NULL,
    tax_status TEXT NOT NULL,
    tax_reason TEXT,
    receipt TEXT,
    received_at INTEGER NOT NULL
);
