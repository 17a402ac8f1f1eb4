-- What was granted to enterprises' agents (async, enterprise-hosted issuing), by the agent's
-- idempotency key: number blocks carved from this platform's ranges (and assigned to the agent
-- at tax) and shares of the month's credit quota.
CREATE TABLE agent_grants (
    agent TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('block', 'quota')),
    enterprise TEXT NOT NULL REFERENCES enterprises (taxpayer_id),
    year BIGINT,
    province BIGINT,
    channel BIGINT,
    first BIGINT,
    last BIGINT,
    assigned BIGINT NOT NULL DEFAULT 0,
    month TEXT,
    amount TEXT,
    at BIGINT NOT NULL,
    PRIMARY KEY (agent, key)
);
CREATE INDEX agent_grants_blocks ON agent_grants (agent, kind, year, province, channel);

-- Invoices an agent issued and reported carry its identity (NULL: the hosted device).
ALTER TABLE invoices ADD COLUMN issued_by TEXT;
