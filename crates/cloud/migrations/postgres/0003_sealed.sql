-- Encryption at rest: `record` and `enterprises.secret` hold sealed values from now on;
-- the buyer's identifier is searched through a blind index (HMAC under a key derived from
-- the master key), and `buyer_id`/`buyer_name` hold what a list may show (an organisation's
-- in full, a natural person's masked).
ALTER TABLE invoices ADD COLUMN buyer_index TEXT;
CREATE INDEX invoices_buyer ON invoices (enterprise, buyer_index);
