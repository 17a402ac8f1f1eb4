-- A pending entry that waits for a peer that did not answer (tax's or a cloud's identity):
-- when the peer answers a probe again, the entry is due at once instead of after its backoff.
ALTER TABLE outbox ADD COLUMN waiting_for TEXT;
