-- Asynchronous generations. A job's generation row exists from its submission ('queued',
-- then 'running', then 'succeeded', 'failed' or 'canceled'); the job row beside it holds
-- what running it needs and the lease of the worker holding it, and goes when it ends.
ALTER TABLE generations DROP CONSTRAINT IF EXISTS generations_status_check;
ALTER TABLE generations ADD CONSTRAINT generations_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled'));

CREATE TABLE generation_jobs (
    id              TEXT PRIMARY KEY REFERENCES generations (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL,
    api_key_id      TEXT NOT NULL,
    mode            TEXT NOT NULL,
    quota_applies   BOOLEAN NOT NULL,
    -- The checked request as JSON (input images in base64).
    request         TEXT NOT NULL,
    -- What was reserved for it, as JSON; NULL when no quota or budget applies.
    reservation     TEXT,
    -- 'queued' or 'running'.
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error_code TEXT,
    run_after       TIMESTAMP NOT NULL,
    lease_token     TEXT,
    lease_until     TIMESTAMP,
    created_at      TIMESTAMP NOT NULL
);
CREATE INDEX generation_jobs_due ON generation_jobs (state, run_after, created_at);
