-- Erasure of personal data (history schema 2). An event's hash covers sha256(salt || payload);
-- `salt` is kept beside the payload, and erasing the payload deletes it and the salt and keeps
-- the commitment in `erased`. Events of schema 1 have neither.
ALTER TABLE history ADD COLUMN salt TEXT;
ALTER TABLE history ADD COLUMN erased TEXT;

-- Who erased whose data, when, and how much (counts and instance ids, never the values).
CREATE TABLE erasures (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    person  TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    at_ms   INTEGER NOT NULL,
    reason  TEXT,
    summary TEXT    NOT NULL
);

CREATE INDEX erasures_by_person ON erasures (person, id);
