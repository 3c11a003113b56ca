-- Accounts, API keys and daily usage.
-- Ids are UUIDs in text form and timestamps are UTC `TIMESTAMP`s, so that one diesel schema
-- serves PostgreSQL and SQLite alike.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMP NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT,
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    is_active    BOOLEAN NOT NULL DEFAULT TRUE,
    last_used_at TIMESTAMP,
    created_at   TIMESTAMP NOT NULL
);
CREATE INDEX api_keys_by_owner ON api_keys (user_id, created_at DESC);

CREATE TABLE usage_daily (
    api_key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    day        DATE NOT NULL,
    count      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, day)
);
