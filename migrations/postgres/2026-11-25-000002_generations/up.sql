-- Generation history. A succeeded row and its usage_daily increment are written in one
-- transaction; failed rows are never counted as usage.
CREATE TABLE generations (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id  TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    prompt      TEXT NOT NULL,
    size        TEXT NOT NULL,
    style       TEXT NOT NULL,
    model       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
    error_code  TEXT,
    object_key  TEXT,
    url         TEXT,
    mime_type   TEXT,
    byte_size   BIGINT,
    latency_ms  BIGINT NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
CREATE INDEX generations_by_key ON generations (api_key_id, created_at);
CREATE INDEX generations_by_user ON generations (user_id, created_at);
