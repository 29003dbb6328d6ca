-- Reference profiles (a roast curve aligned at CHARGE, the roast crate's `Profile` as JSON) and
-- which sessions are compared with which. Owned by analytics.
CREATE TABLE reference_profiles (
    id         TEXT PRIMARY KEY,
    -- Unique so that a session's start message can name its reference by name.
    name       TEXT NOT NULL UNIQUE,
    -- How it was made: session, sim_twin, alog or json.
    source     TEXT NOT NULL,
    -- What it was made from: a session id, a sim-twin profile name, a file name.
    origin     TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    points     INTEGER NOT NULL,
    profile    JSONB NOT NULL
);

-- A session's reference when set through the API; one named in the session's start metadata
-- needs no row. Deleting a profile forgets which sessions it was set for.
CREATE TABLE session_references (
    session    TEXT PRIMARY KEY,
    profile_id TEXT NOT NULL REFERENCES reference_profiles (id) ON DELETE CASCADE,
    set_ms     BIGINT NOT NULL
);
CREATE INDEX session_references_profile ON session_references (profile_id);
