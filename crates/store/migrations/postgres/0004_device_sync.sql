-- Periodic fetches to developers are signed with a per-app secret (sealed at rest).
-- Apps created before this migration have none and fetch unsigned until the operator
-- rotates their secret.
ALTER TABLE apps ADD COLUMN signing_secret TEXT;
ALTER TABLE apps ADD COLUMN previous_signing_secret TEXT;
ALTER TABLE apps ADD COLUMN previous_secret_until BIGINT;

-- The app a `fetched_data` event is about: a device keeps only the latest one per app.
ALTER TABLE events ADD COLUMN appid TEXT;
CREATE INDEX events_app ON events(device_id, appid) WHERE appid IS NOT NULL;

-- A fetch announces its data to every device of the user; a new device and a sync
-- read every app of the user.
CREATE INDEX devices_user ON devices(user_id);
CREATE INDEX fetch_pairs_user ON fetch_pairs(user_id);
