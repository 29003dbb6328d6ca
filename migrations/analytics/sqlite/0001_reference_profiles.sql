-- See migrations/analytics/postgres/0001_reference_profiles.sql. SQLite's pools here run with
-- foreign keys off, so the store deletes a profile's session rows itself.
CREATE TABLE reference_profiles (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    source     TEXT NOT NULL,
    origin     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    points     INTEGER NOT NULL,
    profile    TEXT NOT NULL
);

CREATE TABLE session_references (
    session    TEXT PRIMARY KEY,
    profile_id TEXT NOT NULL,
    set_ms     INTEGER NOT NULL
);
CREATE INDEX session_references_profile ON session_references (profile_id);
