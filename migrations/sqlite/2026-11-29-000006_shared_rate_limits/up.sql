-- Kept for one schema on both backends: with SQLite there is one instance, and its limits
-- are counted in memory (this table stays empty).
CREATE TABLE rate_limits (
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    tat     DOUBLE PRECISION NOT NULL,
    allowed BOOLEAN NOT NULL,
    PRIMARY KEY (action, subject)
);
