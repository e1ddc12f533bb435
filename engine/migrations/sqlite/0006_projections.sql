-- Read models built from domain events (the outbox feed): one row per key of a projection,
-- and each projection's position in the feed, written in the same transaction as its rows.
CREATE TABLE projection_rows (
    projection TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (projection, key)
) WITHOUT ROWID;

CREATE TABLE projection_positions (
    projection TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL
) WITHOUT ROWID;
