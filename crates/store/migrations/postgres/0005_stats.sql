-- Hourly statistics, written in the same transaction as what they count: a fetch's
-- outcome and latency bucket per app; a delivery's outcome and latency bucket, and each
-- decided refresh's trigger, per provider. A row per (owner, hour, what, bucket), so an
-- app or provider holds at most a few thousand rows a day; pruned with the events.
CREATE TABLE fetch_stats (
    appid       TEXT NOT NULL,
    hour        BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    bucket      BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (appid, hour, outcome, bucket)
);
CREATE TABLE provider_stats (
    provider    TEXT NOT NULL,
    hour        BIGINT NOT NULL,
    what        TEXT NOT NULL,          -- done | retry | failed | trigger:<trigger>
    bucket      BIGINT NOT NULL,       -- latency bucket; 0 for triggers
    count       BIGINT NOT NULL,
    PRIMARY KEY (provider, hour, what, bucket)
);
