-- A user's cached body lives beside the pair's state, not in its row: the pair row is
-- rewritten on every launch, token change and fetch order, and a body of up to 256 KiB
-- would be rewritten (and read back) with it each time. The cache row is written only
-- when the cache changes.
CREATE TABLE fetch_cache (
    appid           TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    data            TEXT,
    cached_at       BIGINT,
    cached_sent_at  BIGINT,
    etag            TEXT,
    etag_url        TEXT,
    PRIMARY KEY (appid, user_id)
);
INSERT INTO fetch_cache (appid, user_id, data, cached_at, cached_sent_at, etag, etag_url)
    SELECT appid, user_id, cached_data, cached_at, cached_sent_at, etag, etag_url
    FROM fetch_pairs
    WHERE cached_data IS NOT NULL OR etag IS NOT NULL;
ALTER TABLE fetch_pairs DROP COLUMN cached_data;
ALTER TABLE fetch_pairs DROP COLUMN cached_at;
ALTER TABLE fetch_pairs DROP COLUMN cached_sent_at;
ALTER TABLE fetch_pairs DROP COLUMN etag;
ALTER TABLE fetch_pairs DROP COLUMN etag_url;
