-- Which sessions each device has points in, so that "the latest point of a device" no longer
-- needs an index on telemetry (device_id, ts).
--
-- That index cost more than it served. Every point inserted one entry into it at its device's
-- position: with 1000 roasters streaming, as many scattered pages kept dirty as the primary key
-- itself keeps. The kernel writes dirty pages back in bursts (dirty_expire, 30 s), and each burst
-- stalled the WAL fsync that every acknowledgement waits on, for 200-300 ms with the index,
-- less often and mostly shorter without: p95 13.4 ms against 5.6-8.5 ms over 5-minute load runs
-- at 10,000 points/s (README, "Measuring"). The only query it served is a cache miss of
-- GET /devices/{id}/latest.
--
-- A row here is written once per (device, session), in the same transaction as the session's
-- first points (the store remembers which pairs it has registered), so the table stays as small
-- as `sessions` and costs nothing per point.
CREATE TABLE device_sessions (
    device_id text        NOT NULL,
    session   text        NOT NULL,
    -- The ts of the earliest point registered for the pair. Every point of the session that
    -- could be its latest has ts >= first_ts, which bounds the partitions a lookup visits.
    first_ts  timestamptz NOT NULL,
    PRIMARY KEY (device_id, session)
);

-- A device's sessions, most recently begun first.
CREATE INDEX device_sessions_recent ON device_sessions (device_id, first_ts DESC);

INSERT INTO device_sessions (device_id, session, first_ts)
SELECT device_id, session, min(ts) FROM telemetry GROUP BY device_id, session;

DROP INDEX telemetry_device_ts;
