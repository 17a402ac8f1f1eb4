-- Reconciling with platform: how far the last pass got (the issue time, China time, of the
-- last invoice platform listed); the next pass starts a little before it.
CREATE TABLE reconcile_cursor (id BIGINT PRIMARY KEY CHECK (id = 1), issued_at TEXT NOT NULL);
