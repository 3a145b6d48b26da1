-- API keys, stored only as SHA-256 hashes of the key text.
CREATE TABLE api_keys (
    key_hash    BYTEA PRIMARY KEY,
    kind        TEXT NOT NULL,          -- operator | app | provider | device
    principal   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_principal ON api_keys(kind, principal);

CREATE TABLE apps (
    appid       TEXT PRIMARY KEY,
    app         TEXT NOT NULL           -- the rules' App as JSON
);

CREATE TABLE providers (
    provider        TEXT PRIMARY KEY,
    provider_num    BIGINT NOT NULL UNIQUE,
    refresh_url     TEXT NOT NULL,
    system_app      BIGINT NOT NULL,
    api_version     BIGINT NOT NULL,
    market_update_duration BIGINT,
    signing_secret  TEXT NOT NULL,
    form_config     TEXT                -- the last accepted form_config.json
);

-- One row a device: the rules' Device as JSON, and when it next needs waking.
CREATE TABLE devices (
    device_id       TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    state           TEXT NOT NULL,
    version         BIGINT NOT NULL,
    next_wake_at    BIGINT,
    -- The node that is waking this device, and until when (a lease).
    claimed_by      TEXT,
    claim_until     BIGINT
);
CREATE INDEX devices_due ON devices(next_wake_at) WHERE next_wake_at IS NOT NULL;

CREATE TABLE forms (
    form_id     TEXT PRIMARY KEY,
    form_num    BIGINT NOT NULL UNIQUE,
    device_id   TEXT NOT NULL REFERENCES devices(device_id),
    provider    TEXT NOT NULL REFERENCES providers(provider),
    form_name   TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX forms_device ON forms(device_id);
CREATE INDEX forms_provider ON forms(provider);

CREATE TABLE form_data (
    form_id     TEXT PRIMARY KEY,
    data        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    trigger     TEXT NOT NULL,
    -- Set when data arrived for a hidden form: the host hears of it when shown.
    announce_on_show BIGINT NOT NULL DEFAULT 0
);

-- Recent decisions per form, for explanations.
CREATE TABLE form_decisions (
    id          BIGSERIAL PRIMARY KEY,
    form_id     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    decision    TEXT NOT NULL,
    rule        TEXT NOT NULL
);
CREATE INDEX form_decisions_form ON form_decisions(form_id, id);

-- Refresh deliveries to providers. Written in the same transaction as the decision.
CREATE TABLE deliveries (
    delivery_id     TEXT PRIMARY KEY,
    form_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    provider        TEXT NOT NULL,
    body            TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT,            -- NULL once done or given up
    state           TEXT NOT NULL,      -- pending | done | failed
    created_at      BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE next_attempt_at IS NOT NULL;

-- Events for hosts (SSE), replayable by id.
CREATE TABLE events (
    event_id    BIGSERIAL PRIMARY KEY,
    device_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX events_device ON events(device_id, event_id);

-- One row per user and app: the rules' FetchPair, the encrypted token and the cache.
CREATE TABLE fetch_pairs (
    appid           TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    state           TEXT NOT NULL,
    version         BIGINT NOT NULL,
    next_wake_at    BIGINT,
    claimed_by      TEXT,
    claim_until     BIGINT,
    token_sealed    BYTEA,
    cached_data     TEXT,
    cached_at       BIGINT,
    etag            TEXT,
    etag_url        TEXT,
    PRIMARY KEY (appid, user_id)
);
CREATE INDEX fetch_pairs_due ON fetch_pairs(next_wake_at) WHERE next_wake_at IS NOT NULL;

CREATE TABLE fetch_log (
    id          BIGSERIAL PRIMARY KEY,
    appid       TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    gray        BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    http_status BIGINT,
    bytes       BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX fetch_log_pair ON fetch_log(appid, user_id, id);

-- Monotonic counters (form numbers are never reused: F22).
CREATE TABLE counters (
    name    TEXT PRIMARY KEY,
    value   BIGINT NOT NULL
);
