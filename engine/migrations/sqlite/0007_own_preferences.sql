-- Notification preferences people set for themselves. Kept apart from their directory entry
-- (`people.body`), which an import of the directory replaces; read in its place.
CREATE TABLE own_preferences (
    person_id TEXT PRIMARY KEY,
    body      TEXT NOT NULL
);
