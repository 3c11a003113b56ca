-- Safe retries and a record: test-mode keys, generations that can be deleted, and the
-- answers kept for Idempotency-Key.

-- 'live' keys call Google; 'test' keys (nb_test_…) make a deterministic image locally
-- (the application writes only these two values).
ALTER TABLE api_keys ADD COLUMN mode TEXT NOT NULL DEFAULT 'live';
ALTER TABLE generations ADD COLUMN mode TEXT NOT NULL DEFAULT 'live';
-- Set when the user deleted the generation: its image is gone, the row stays as history.
ALTER TABLE generations ADD COLUMN deleted_at TIMESTAMP;
CREATE INDEX generations_by_object ON generations (object_key);

-- One row per (API key, Idempotency-Key): 'running' while the first request works (until
-- locked_until, after which another may take over), then 'done' with the answer to replay,
-- until expires_at. `lease` names the request holding a 'running' row: only it may
-- complete or release it.
CREATE TABLE idempotency_keys (
    api_key_id   TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('running', 'done')),
    lease        TEXT NOT NULL,
    status       INTEGER,
    content_type TEXT,
    body         BLOB,
    created_at   TIMESTAMP NOT NULL,
    locked_until TIMESTAMP NOT NULL,
    expires_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
