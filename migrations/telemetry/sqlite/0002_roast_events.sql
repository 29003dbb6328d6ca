-- Roast events, as in migrations/telemetry/postgres/0003_roast_events.sql. A rowid table, like
-- telemetry: rowid order is the order the fallback replays them into PostgreSQL.
CREATE TABLE roast_events (
    device_id   TEXT    NOT NULL,
    session     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    detected_at INTEGER NOT NULL,
    bt          REAL,
    et          REAL,
    ror         REAL,
    method      TEXT    NOT NULL,
    confidence  REAL    NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (device_id, session, kind)
);

CREATE INDEX roast_events_session ON roast_events (session, ts);
