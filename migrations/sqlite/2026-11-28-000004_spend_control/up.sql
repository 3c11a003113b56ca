-- Spend control: keys that expire, keys and accounts with limits, accounts an operator can
-- disable, quota counters, and an audit of what operators do.
ALTER TABLE api_keys ADD COLUMN expires_at TIMESTAMP;
ALTER TABLE api_keys ADD COLUMN per_minute INTEGER;
ALTER TABLE api_keys ADD COLUMN per_day BIGINT;
ALTER TABLE api_keys ADD COLUMN per_month BIGINT;
ALTER TABLE api_keys ADD COLUMN rolled_from TEXT;

ALTER TABLE users ADD COLUMN per_day BIGINT;
ALTER TABLE users ADD COLUMN per_month BIGINT;
ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;

-- Images counted against a quota: reserved before the provider is called, given back when
-- not made. One row per key or account, per day or month, per period.
CREATE TABLE quota_counters (
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('key', 'account')),
    subject_id   TEXT NOT NULL,
    period       TEXT NOT NULL CHECK (period IN ('day', 'month')),
    starts_on    DATE NOT NULL,
    count        BIGINT NOT NULL CHECK (count >= 0),
    PRIMARY KEY (subject_kind, subject_id, period, starts_on)
);

CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,
    actor_id   TEXT NOT NULL,
    action     TEXT NOT NULL,
    target_id  TEXT NOT NULL,
    before     TEXT NOT NULL,
    after      TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (created_at DESC, id DESC);
