-- The local store: the primary store when no PostgreSQL is configured, and the fallback that holds
-- acknowledged points while PostgreSQL is down. Same tables and column names as
-- migrations/postgres, so both backends have the same identity and upsert semantics; times are
-- INTEGER Unix epoch milliseconds, JSON is TEXT.

-- A rowid table on purpose: rowid order is arrival order, which is the order the fallback is
-- replayed into PostgreSQL.
CREATE TABLE telemetry (
    device_id   TEXT    NOT NULL,
    session     TEXT    NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq >= 0),
    ts          INTEGER NOT NULL,
    bt          REAL,
    et          REAL,
    gas         REAL,
    air         REAL,
    drum        REAL,
    -- Channels beyond the five named ones, as a JSON object text; NULL when none.
    extra       TEXT,
    received_at INTEGER NOT NULL,
    -- ts is in the key only to match PostgreSQL, whose partitioned table needs it there: a
    -- redelivered point carries the same ts, so it collides either way.
    PRIMARY KEY (session, device_id, seq, ts)
);

CREATE INDEX telemetry_device_ts ON telemetry (device_id, ts DESC);

CREATE TABLE sessions (
    device_id  TEXT    NOT NULL,
    session    TEXT    NOT NULL,
    started_at INTEGER,
    ended_at   INTEGER,
    metadata   TEXT    NOT NULL DEFAULT '{}',
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, session)
);

CREATE INDEX sessions_session ON sessions (session);

CREATE TABLE dead_letters (
    id            INTEGER PRIMARY KEY,
    received_at   INTEGER NOT NULL,
    topic         TEXT    NOT NULL,
    device_id     TEXT,
    payload       BLOB    NOT NULL,
    payload_bytes INTEGER NOT NULL,
    frame_index   INTEGER,
    reason_code   TEXT    NOT NULL,
    reason        TEXT    NOT NULL
);

CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
