-- Replicas side by side. A hosted device's number block is held by the replica whose device
-- numbers from it (`holder`, its instance id) until `held_until` (Unix seconds), renewed as it
-- issues; a block whose holder stopped (released at a graceful stop, or its lease run out)
-- is taken over from its next number, so no number is used twice and none is left
-- unaccounted for. An outbox entry being sent is claimed by one replica (`claimed_by`) until
-- `claimed_until`; a killed replica's claims run out and another takes them over.
ALTER TABLE blocks ADD COLUMN holder TEXT;
ALTER TABLE blocks ADD COLUMN held_until BIGINT;
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until BIGINT;
