-- Replicas side by side: a webhook delivery being sent is claimed by one replica
-- (`claimed_by`, its instance id) until `claimed_until` (Unix seconds); a killed replica's
-- claims run out and another takes them over.
ALTER TABLE webhooks ADD COLUMN claimed_by TEXT;
ALTER TABLE webhooks ADD COLUMN claimed_until INTEGER;
