ALTER TABLE rate_limits DROP COLUMN granted;
ALTER TABLE rate_limits SET LOGGED;
