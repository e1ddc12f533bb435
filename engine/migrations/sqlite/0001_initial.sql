-- Baton's SQLite schema. Times are Unix milliseconds (INTEGER); JSON values are TEXT.
-- No foreign keys: every write of a step lands in one transaction, and the history table is
-- the fence (a second writer appending the same (instance_id, seq) fails on its primary key).

CREATE TABLE instances (
    id              TEXT    NOT NULL PRIMARY KEY,
    orchestration   TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    next_seq        INTEGER NOT NULL,
    last_hash       TEXT    NOT NULL,
    run_start       INTEGER NOT NULL,
    idempotency_key TEXT    UNIQUE,
    parent_id       TEXT,
    parent_seq      INTEGER,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    result          TEXT
);

-- Instance lists filter by status and/or orchestration and page by id.
CREATE INDEX instances_by_status ON instances (status, id);
CREATE INDEX instances_by_orchestration ON instances (orchestration, id);

CREATE TABLE history (
    -- Rows are appended in commit order, so a group commit writes a few new pages instead of
    -- rewriting one page per instance; the unique key below is the fence against forks.
    id          INTEGER PRIMARY KEY,
    instance_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    tag         INTEGER NOT NULL,
    schema      INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL,
    UNIQUE (instance_id, seq)
);

-- One snapshot per instance: the newest replaces the previous one.
CREATE TABLE snapshots (
    instance_id TEXT    NOT NULL PRIMARY KEY,
    seq         INTEGER NOT NULL,
    state       TEXT    NOT NULL
);

CREATE TABLE tasks (
    instance_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    input       TEXT    NOT NULL,
    options     TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    visible_ms  INTEGER NOT NULL,
    parked      INTEGER NOT NULL,
    last_error  TEXT,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;

-- Recovery reads the dispatchable tasks in visibility order.
CREATE INDEX tasks_open ON tasks (visible_ms, instance_id, seq) WHERE parked = 0;

CREATE TABLE timers (
    instance_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    due_ms      INTEGER NOT NULL,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;

CREATE INDEX timers_by_due ON timers (due_ms, instance_id, seq);

CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL
);

CREATE TABLE incidents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id   TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    task_seq      INTEGER,
    pending_input TEXT,
    created_ms    INTEGER NOT NULL,
    resolved_ms   INTEGER
);

CREATE INDEX incidents_by_instance ON incidents (instance_id, id);

CREATE TABLE received_events (
    instance_id TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (instance_id, event_id)
) WITHOUT ROWID;

CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
