-- The telemetry schema. Operators query these tables with plain SQL, so column names follow the
-- device contract (docs/protocol.md). Times are timestamptz; the service converts them from and to
-- the contract's Unix epoch milliseconds.

-- One row per telemetry point. Partitioned by day on `ts` so that old data can be detached or
-- dropped per day and a query for one roast touches one or two partitions. The daily partitions
-- (telemetry_pYYYYMMDD, UTC days) are created ahead of time by the service (`ensure_partitions`),
-- not here: a migration runs once, days keep coming.
CREATE TABLE telemetry (
    device_id   text             NOT NULL,
    session     text             NOT NULL,
    seq         bigint           NOT NULL CHECK (seq >= 0),
    ts          timestamptz      NOT NULL,
    bt          double precision,
    et          double precision,
    gas         double precision,
    air         double precision,
    drum        double precision,
    -- Channels beyond the five named ones, as an object of name -> number; NULL when none.
    extra       jsonb            CHECK (extra IS NULL OR jsonb_typeof(extra) = 'object'),
    received_at timestamptz      NOT NULL,
    -- The identity of a point is (device_id, session, seq). PostgreSQL requires the partition key
    -- in every unique constraint of a partitioned table, so ts is part of the key too. A redelivered
    -- point is the same message with the same ts, so it still collides here and the writer's
    -- ON CONFLICT DO NOTHING absorbs it. `session` leads so that "all points of a roast" is an
    -- index range scan in each partition.
    PRIMARY KEY (session, device_id, seq, ts)
) PARTITION BY RANGE (ts);

-- Catches any point whose day has no partition yet, so that an insert can never fail for lack of
-- one. It should stay empty; rows here keep their day's partition from being created (the service
-- logs a warning when that happens).
CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;

-- "The latest point of a device" without scanning its whole history.
CREATE INDEX telemetry_device_ts ON telemetry (device_id, ts DESC);

-- One row per (device, session). Written with a commutative upsert so that replaying messages in
-- any order gives the same row: the first start and the first end win, metadata objects are
-- merged, and a start arriving after the end does not reopen the session.
CREATE TABLE sessions (
    device_id  text        NOT NULL,
    session    text        NOT NULL,
    started_at timestamptz,
    ended_at   timestamptz,
    -- Fields of the start/end messages beyond session/state/ts (bean, batch size, profile ...).
    metadata   jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    -- When ingestion last received a message about this session.
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, session)
);

-- Session ids are chosen by devices and may collide across devices: look them up by id alone.
CREATE INDEX sessions_session ON sessions (session);

-- Messages (or single points of a frame) that were refused, kept for inspection and pruned by
-- age and count.
CREATE TABLE dead_letters (
    id            bigserial   PRIMARY KEY,
    received_at   timestamptz NOT NULL,
    topic         text        NOT NULL,
    -- NULL when the topic itself was malformed.
    device_id     text,
    -- Truncated to the service's configured limit; payload_bytes is the size as received.
    payload       bytea       NOT NULL,
    payload_bytes integer     NOT NULL,
    -- For one bad point inside a frame: its index in the array.
    frame_index   integer,
    -- Stable code (model::Rejection::code), for grouping; reason is for humans.
    reason_code   text        NOT NULL,
    reason        text        NOT NULL
);

CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
