-- What the command service knows of each device's session from its session messages: which
-- session is running and on which roaster model, so that after a restart a proposal is checked
-- against the same session and the same model's safety limits as before it. Telemetry after a
-- restart tells the session again, but never the model: only a session start names it.
-- One row per device; a message older than the row (a redelivery) changes nothing.
CREATE TABLE command_device_sessions (
    device_id     TEXT PRIMARY KEY,
    session       TEXT NOT NULL,
    active        BOOLEAN NOT NULL,
    roaster_model TEXT,
    -- The session message's own time (device clock).
    ts_ms         BIGINT NOT NULL
);
