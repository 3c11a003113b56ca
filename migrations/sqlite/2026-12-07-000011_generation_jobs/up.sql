-- Asynchronous generations (see the PostgreSQL migration). SQLite cannot change a CHECK
-- constraint, so the generations table is rebuilt with the new statuses.
CREATE TABLE generations_new (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id  TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    prompt      TEXT NOT NULL,
    size        TEXT NOT NULL,
    style       TEXT NOT NULL,
    model       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    error_code  TEXT,
    object_key  TEXT,
    url         TEXT,
    mime_type   TEXT,
    byte_size   BIGINT,
    latency_ms  BIGINT NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    mode TEXT NOT NULL DEFAULT 'live',
    deleted_at TIMESTAMP,
    aspect_ratio TEXT,
    resolution TEXT,
    width INTEGER,
    height INTEGER,
    input_tokens BIGINT,
    input_text_tokens BIGINT,
    input_image_tokens BIGINT,
    output_tokens BIGINT,
    output_image_tokens BIGINT,
    output_text_tokens BIGINT,
    thinking_tokens BIGINT,
    total_tokens BIGINT,
    previous_generation_id TEXT,
    turn TEXT,
    cost_nano_usd BIGINT NOT NULL DEFAULT 0
);
INSERT INTO generations_new SELECT id, user_id, api_key_id, prompt, size, style, model, status,
    error_code, object_key, url, mime_type, byte_size, latency_ms, created_at, mode, deleted_at,
    aspect_ratio, resolution, width, height, input_tokens, input_text_tokens, input_image_tokens,
    output_tokens, output_image_tokens, output_text_tokens, thinking_tokens, total_tokens,
    previous_generation_id, turn, cost_nano_usd FROM generations;
DROP TABLE generations;
ALTER TABLE generations_new RENAME TO generations;
CREATE INDEX generations_by_key ON generations (api_key_id, created_at);
CREATE INDEX generations_by_user ON generations (user_id, created_at);
CREATE INDEX generations_by_object ON generations (object_key);

CREATE TABLE generation_jobs (
    id              TEXT PRIMARY KEY REFERENCES generations (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL,
    api_key_id      TEXT NOT NULL,
    mode            TEXT NOT NULL,
    quota_applies   BOOLEAN NOT NULL,
    request         TEXT NOT NULL,
    reservation     TEXT,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error_code TEXT,
    run_after       TIMESTAMP NOT NULL,
    lease_token     TEXT,
    lease_until     TIMESTAMP,
    created_at      TIMESTAMP NOT NULL
);
CREATE INDEX generation_jobs_due ON generation_jobs (state, run_after, created_at);
