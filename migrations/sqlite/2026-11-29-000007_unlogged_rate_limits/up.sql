-- PostgreSQL only (its rate_limits table becomes UNLOGGED); SQLite counts limits in memory.
SELECT 1;
