-- The same columns as PostgreSQL's (whose table also becomes UNLOGGED); with SQLite, limits are
-- counted in memory and this table stays empty.
ALTER TABLE rate_limits ADD COLUMN granted INTEGER NOT NULL DEFAULT 0;
