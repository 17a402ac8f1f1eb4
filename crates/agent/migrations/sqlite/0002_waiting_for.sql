-- A pending entry that waits for a peer that did not answer (its identity): when the peer
-- answers a probe again, the entry is due at once instead of after its backoff.
ALTER TABLE queue ADD COLUMN waiting_for TEXT;
