-- A red's upload waits for the earlier uploads of its blue and of that blue's other reds
-- (tax checks a red against what it already holds); the outbox finds them by number.
CREATE INDEX outbox_number ON outbox (number, kind, state);
