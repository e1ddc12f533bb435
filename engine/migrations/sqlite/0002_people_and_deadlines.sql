-- People and deadlines: human tasks and who may see them, SLA clocks, notification deliveries
-- and the in-app inbox, and the directory (people, their roles and groups, departments).
-- Times are Unix milliseconds (INTEGER); JSON values are TEXT.

-- A human task's row mirrors the task kept in its instance's state (the JSON in `body`); the
-- columns beside it are what inboxes filter and sort by.
CREATE TABLE human_tasks (
    instance_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    definition  TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    assignee    TEXT,
    delegate    TEXT,
    department  TEXT,
    priority    INTEGER NOT NULL,
    due_ms      INTEGER,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;

-- An administrator's inbox walks one status in (instance_id, seq) order.
CREATE INDEX human_tasks_by_status ON human_tasks (status, instance_id, seq);

-- The access keys that open each task (HumanTask::access_keys), with the task's status copied
-- in: an inbox reads, for each key the person holds, only the tasks of the status it lists,
-- already in (instance_id, seq) order, so a team leader's 200 open tasks are found without
-- touching the other 100,000 (or the finished tasks that stay visible to them). The keys and
-- the status are replaced together whenever the task is written.
CREATE TABLE human_task_access (
    key         TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    instance_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (key, status, instance_id, seq)
) WITHOUT ROWID;

-- Replacing a task's keys finds them by task.
CREATE INDEX human_task_access_by_task ON human_task_access (instance_id, seq);

CREATE TABLE slas (
    instance_id      TEXT    NOT NULL,
    seq              INTEGER NOT NULL,
    definition       TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    human_task       INTEGER,
    department       TEXT,
    calendar         TEXT,
    within_ms        INTEGER NOT NULL,
    started_ms       INTEGER NOT NULL,
    target_ms        INTEGER,
    at_risk_ms       INTEGER,
    elapsed_ms       INTEGER NOT NULL,
    running_since_ms INTEGER,
    escalations      INTEGER NOT NULL,
    breached_ms      INTEGER,
    stopped_ms       INTEGER,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;

-- Dashboards filter by department, by definition, or by clocks still open; all page by
-- (instance_id, seq).
CREATE INDEX slas_by_department ON slas (department, instance_id, seq);
CREATE INDEX slas_by_definition ON slas (definition, instance_id, seq);
CREATE INDEX slas_open ON slas (instance_id, seq) WHERE stopped_ms IS NULL;

-- The delivery log. (instance_id, seq, recipient, channel) is the idempotency key: a notify
-- retried or replayed finds its deliveries already there and sends nothing twice.
CREATE TABLE notification_deliveries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id   TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    recipient     TEXT    NOT NULL,
    channel       TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    not_before_ms INTEGER NOT NULL,
    digest        INTEGER NOT NULL,
    attempts      INTEGER NOT NULL,
    last_error    TEXT,
    created_ms    INTEGER NOT NULL,
    sent_ms       INTEGER,
    UNIQUE (instance_id, seq, recipient, channel)
);

-- The sender reads pending deliveries by due time.
CREATE INDEX notification_deliveries_due ON notification_deliveries (not_before_ms, id) WHERE status = 'pending';
CREATE INDEX notification_deliveries_by_recipient ON notification_deliveries (recipient, id);

CREATE TABLE in_app_notifications (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT    NOT NULL,
    delivery   INTEGER NOT NULL UNIQUE,
    subject    TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    link       TEXT,
    created_ms INTEGER NOT NULL,
    read_ms    INTEGER
);

CREATE INDEX in_app_notifications_by_user ON in_app_notifications (user_id, id);

-- The directory. A person's row holds the whole Person as JSON; their roles and groups are
-- copied into the tables below (replaced with the person) so lookups by role and group use an
-- index.
CREATE TABLE people (
    id         TEXT    NOT NULL PRIMARY KEY,
    body       TEXT    NOT NULL,
    department TEXT,
    active     INTEGER NOT NULL
);

CREATE INDEX people_by_department ON people (department, id);

-- A role grant; department NULL is an organisation-wide grant.
CREATE TABLE person_roles (
    person_id  TEXT NOT NULL,
    role       TEXT NOT NULL,
    department TEXT
);

CREATE INDEX person_roles_by_role ON person_roles (role, department, person_id);
CREATE INDEX person_roles_by_person ON person_roles (person_id);

CREATE TABLE person_groups (
    group_id  TEXT NOT NULL,
    person_id TEXT NOT NULL,
    PRIMARY KEY (group_id, person_id)
) WITHOUT ROWID;

CREATE INDEX person_groups_by_person ON person_groups (person_id);

CREATE TABLE departments (
    id   TEXT NOT NULL PRIMARY KEY,
    body TEXT NOT NULL
);

CREATE TABLE groups (
    id   TEXT NOT NULL PRIMARY KEY,
    body TEXT NOT NULL
);
