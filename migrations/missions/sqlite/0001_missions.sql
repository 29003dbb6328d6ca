-- The mission queue of company-kernel (services/company-kernel): missions waiting, claimed by a
-- worker under a lease, done, or dead after their last attempt; and every attempt with its
-- outcome, so a dead mission keeps the reasons it died of.

-- queued (claimable once not_before_ms has passed) → running (a worker holds the lease) →
-- done | queued again (the attempt failed, or its lease expired: retried with backoff) | dead
-- (the last attempt failed, or the deadline passed). Every change is a conditional UPDATE on
-- the state (and the lease token), so it happens once whoever asks twice.
CREATE TABLE missions (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    -- JSON, the kind's business.
    payload          TEXT NOT NULL,
    -- Higher first; of equal priority, the oldest first.
    priority         INTEGER NOT NULL,
    -- Submitting the same key twice creates one mission.
    idempotency_key  TEXT UNIQUE,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    not_before_ms    BIGINT NOT NULL,
    -- Not claimed after this: dead.
    deadline_ms      BIGINT,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    -- Who holds it, with which lease (a token per claim), until when.
    lease_owner      TEXT,
    lease_token      TEXT,
    lease_expires_ms BIGINT,
    -- JSON: what the worker reported when it finished.
    result           TEXT,
    -- The submitter's trace, for the decision traces.
    trace_id         TEXT
);
CREATE INDEX missions_claimable ON missions (state, priority DESC, created_ms, id);
CREATE INDEX missions_leases ON missions (state, lease_expires_ms);

-- One row per claim: how it ended (done, failed, lease_expired) and why.
CREATE TABLE mission_attempts (
    mission_id TEXT NOT NULL REFERENCES missions (id),
    attempt    INTEGER NOT NULL,
    worker     TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    ended_ms   BIGINT,
    outcome    TEXT,
    reason     TEXT,
    PRIMARY KEY (mission_id, attempt)
);
