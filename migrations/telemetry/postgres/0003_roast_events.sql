-- Roast events (docs/protocol.md, "Roast events"): what event-inference said about a session,
-- stored by ingestion from roasters/+/events. A session has each kind at most once and events
-- are never revised, so the key is (device_id, session, kind) and a copy is ignored: the first
-- write wins.
CREATE TABLE roast_events (
    device_id   text             NOT NULL,
    session     text             NOT NULL,
    kind        text             NOT NULL,
    ts          timestamptz      NOT NULL,
    detected_at timestamptz      NOT NULL,
    bt          double precision,
    et          double precision,
    ror         double precision,
    method      text             NOT NULL,
    confidence  double precision NOT NULL,
    received_at timestamptz      NOT NULL,
    PRIMARY KEY (device_id, session, kind)
);

-- GET /sessions/{session}/events looks a session up without its device.
CREATE INDEX roast_events_session ON roast_events (session, ts);
