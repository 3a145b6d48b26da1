-- Cloud environments the operator manages through the API; the configuration file's
-- environments apply to names not listed here.
CREATE TABLE cloud_envs (
    env         TEXT PRIMARY KEY,
    base_url    TEXT NOT NULL
);
