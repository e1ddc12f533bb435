-- The person who started an instance (the user actor of its InstanceStarted), so that people
-- can search their own instances. Rows of instances started before this migration have none.
ALTER TABLE instances ADD COLUMN initiator TEXT;

CREATE INDEX instances_by_initiator ON instances (initiator, id);
