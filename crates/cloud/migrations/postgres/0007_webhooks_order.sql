-- Due webhooks are delivered in id order: the index gives them in that order (see the
-- platform's outbox, which had the same index and the same cost), instead of every due one
-- read and sorted on each poll.
DROP INDEX webhooks_due;
CREATE INDEX webhooks_pending ON webhooks (state, id, next_attempt_at);
