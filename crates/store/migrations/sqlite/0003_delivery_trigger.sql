-- The trigger a delivery's body names, kept beside it: an answer is filed under it
-- without reading the body again. Rows from before take it from their body.
ALTER TABLE deliveries ADD COLUMN trigger TEXT NOT NULL DEFAULT '';
UPDATE deliveries SET trigger = COALESCE(json_extract(body, '$.trigger'), '');
