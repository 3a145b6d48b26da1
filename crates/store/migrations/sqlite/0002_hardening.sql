-- The health check commits a row here and deletes it again, to learn whether writes
-- fit after a commit failed (a full disk). Always empty between checks.
CREATE TABLE write_probe (
    id      INTEGER PRIMARY KEY,
    filler  BLOB NOT NULL
);

-- A rotated signing secret keeps signing beside its successor until this instant.
ALTER TABLE providers ADD COLUMN previous_signing_secret TEXT;
ALTER TABLE providers ADD COLUMN previous_secret_until INTEGER;

-- When the fetch that produced the cached data was sent: the cache only moves forward.
ALTER TABLE fetch_pairs ADD COLUMN cached_sent_at INTEGER;

-- The form an event is about: each form keeps a short history of events.
ALTER TABLE events ADD COLUMN form_id TEXT;
CREATE INDEX events_form ON events(form_id, event_id) WHERE form_id IS NOT NULL;
