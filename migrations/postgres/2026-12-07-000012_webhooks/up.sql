-- Webhooks: an account's endpoints (secrets sealed with NB_ENCRYPTION_KEY, never in the
-- clear), the outbox of their events (one row per event and endpoint, written in the same
-- transaction as the generation's outcome), and every delivery attempt.
CREATE TABLE webhook_endpoints (
    id                         TEXT PRIMARY KEY,
    user_id                    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url                        TEXT NOT NULL,
    description                TEXT,
    on_succeeded               BOOLEAN NOT NULL,
    on_failed                  BOOLEAN NOT NULL,
    on_canceled                BOOLEAN NOT NULL,
    status                     TEXT NOT NULL CHECK (status IN ('active', 'failing')),
    secret                     BYTEA NOT NULL,
    previous_secret            BYTEA,
    previous_secret_expires_at TIMESTAMP,
    created_at                 TIMESTAMP NOT NULL
);
CREATE INDEX webhook_endpoints_by_user ON webhook_endpoints (user_id, created_at);

CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    generation_id   TEXT NOT NULL,
    -- The generation's outcome: 'succeeded', 'failed' or 'canceled'.
    event           TEXT NOT NULL,
    occurred_at     TIMESTAMP NOT NULL,
    -- 'pending' until delivered or given up.
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    lease_token     TEXT,
    body            BYTEA,
    PRIMARY KEY (endpoint_id, generation_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);

CREATE TABLE webhook_attempts (
    id            TEXT PRIMARY KEY,
    endpoint_id   TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    generation_id TEXT NOT NULL,
    event         TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    attempted_at  TIMESTAMP NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    duration_ms   BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, attempted_at, id);
