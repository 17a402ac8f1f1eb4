-- What keeps the agent from its work, as it last found it, for `fapiao agent status`:
-- `clock` (its clock off from its peers': not issuing), `pull` (cloud refuses or does not
-- answer: orders wait there). `problem` is NULL once it cleared; `since` when it last changed.
CREATE TABLE notes (name TEXT PRIMARY KEY, problem TEXT, since BIGINT NOT NULL);
