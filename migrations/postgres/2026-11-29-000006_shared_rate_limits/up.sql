-- Per-minute limits shared by every instance (GCRA): one row per action and subject, with its
-- theoretical arrival time in epoch seconds. Rows whose allowance is back to full are deleted
-- every minute.
CREATE TABLE rate_limits (
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    tat     DOUBLE PRECISION NOT NULL,
    allowed BOOLEAN NOT NULL,
    PRIMARY KEY (action, subject)
);
