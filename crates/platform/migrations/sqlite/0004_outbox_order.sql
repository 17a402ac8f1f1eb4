-- The worker takes due entries in id order. With the index on (state, next_attempt_at), SQLite
-- read every due entry and sorted them to take the first few: with thousands waiting (uploads
-- catching up), each poll cost milliseconds. Entries by state in id order (the due time in the
-- index too, so entries waiting for a retry are skipped without reading their rows) give the
-- first few at once; the listing by state uses it as well.
DROP INDEX outbox_due;
CREATE INDEX outbox_pending ON outbox (state, id, next_attempt_at);
