-- Command proposals and their lifecycle, the tamper-evident audit log of everything that
-- happened to them (and to device keys), and the device key registry. Owned by the command
-- service (services/command, docs/commands.md).

-- One row per command: proposed → approved | rejected | expired → sent → acked | failed |
-- timed_out. A transition is a conditional UPDATE on (id, state), so each happens once.
CREATE TABLE commands (
    id             TEXT PRIMARY KEY,
    device_id      TEXT NOT NULL,
    session        TEXT NOT NULL,
    control        TEXT NOT NULL,
    value          DOUBLE PRECISION NOT NULL,
    -- The control's value when proposed (for step and rate limits); NULL when unknown.
    from_value     DOUBLE PRECISION,
    reason         TEXT NOT NULL,
    proposer       TEXT NOT NULL,
    -- operator, analytics or mission.
    source         TEXT NOT NULL,
    state          TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    -- A proposal not decided by then expires.
    expires_ms     BIGINT NOT NULL,
    decided_by     TEXT,
    decided_ms     BIGINT,
    -- Set when signed and sent: what the device got.
    sent_ms        BIGINT,
    not_after_ms   BIGINT,
    nonce          TEXT,
    key_id         TEXT,
    -- Set when the device answered (acked or failed) or when it timed out.
    finished_ms    BIGINT,
    outcome_reason TEXT,
    updated_ms     BIGINT NOT NULL
);
CREATE INDEX commands_state ON commands (state, updated_ms);
CREATE INDEX commands_device ON commands (device_id, control, created_ms);

-- Append-only. hash = SHA-256(prev_hash ‖ canonical entry), hex; the first entry's prev_hash is
-- 64 zeros. Entries are appended under the lock of the head row below, so concurrent writers
-- (even several replicas) never fork the chain.
CREATE TABLE command_audit (
    seq       BIGINT PRIMARY KEY,
    ts_ms     BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    reason    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX command_audit_subject ON command_audit (subject, seq);

-- The chain's newest link: one row, locked by every append.
CREATE TABLE command_audit_head (
    id   INTEGER PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO command_audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- The platform's trust in device keys: active (accepted), pending (registered, not yet
-- confirmed: accepted, and confirmed by its first good signature), retired (replaced), revoked.
CREATE TABLE device_keys (
    device_id  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    public_key TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, key_id)
);

-- Append-only, enforced: only someone who can drop these triggers can edit the log, and the
-- hash chain still shows it.
CREATE TRIGGER command_audit_no_update BEFORE UPDATE ON command_audit
BEGIN
    SELECT RAISE(ABORT, 'command_audit is append-only');
END;
CREATE TRIGGER command_audit_no_delete BEFORE DELETE ON command_audit
BEGIN
    SELECT RAISE(ABORT, 'command_audit is append-only');
END;
