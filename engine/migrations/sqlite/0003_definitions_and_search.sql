-- Deployed definitions, and what instance searches filter by: business key, namespace, tags.
-- Times are Unix milliseconds (INTEGER); JSON values are TEXT.

-- A deployed definition version, immutable once written. `seq` is the deploy order (the
-- cursor of definition lists); AUTOINCREMENT keeps it from ever being reused.
CREATE TABLE definitions (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    namespace    TEXT,
    content_hash TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    -- JSON of the Actor who deployed it.
    deployed_by  TEXT    NOT NULL,
    deployed_ms  INTEGER NOT NULL,
    UNIQUE (name, version)
);

-- The latest version of a name, and lists by name or namespace, walk deploy order.
CREATE INDEX definitions_by_name ON definitions (name, seq);
CREATE INDEX definitions_by_namespace ON definitions (namespace, seq);

-- Both come from the start of the instance: the business key from the caller, the namespace
-- from its definition. Rows of instances started before this migration have neither.
ALTER TABLE instances ADD COLUMN business_key TEXT;
ALTER TABLE instances ADD COLUMN namespace TEXT;

-- Instance lists filter by business key or namespace and page by id.
CREATE INDEX instances_by_business_key ON instances (business_key, id);
CREATE INDEX instances_by_namespace ON instances (namespace, id);
CREATE INDEX instances_by_created ON instances (created_ms);

-- An instance's tags, written in the transaction that creates its row and never changed. A
-- tag's instances are read in id order on the primary key; an instance's tags on the index.
CREATE TABLE instance_tags (
    instance_id TEXT NOT NULL,
    tag         TEXT NOT NULL,
    PRIMARY KEY (tag, instance_id)
) WITHOUT ROWID;

CREATE INDEX instance_tags_by_instance ON instance_tags (instance_id, tag);
