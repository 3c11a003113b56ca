-- Rate-limit state needs no durability: without WAL, a decision's commit waits for no disk
-- flush. After a crash the table is empty: every allowance starts full again. Unlogged tables
-- are not replicated, and need not be: limits are decided on the primary.
ALTER TABLE rate_limits SET UNLOGGED;
-- One statement decides a batch of requests for one subject: how many of them it let through.
ALTER TABLE rate_limits ADD COLUMN granted INTEGER NOT NULL DEFAULT 0;
