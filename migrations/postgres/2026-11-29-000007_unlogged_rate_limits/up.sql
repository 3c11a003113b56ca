-- Rate-limit state needs no durability: without WAL, a decision's commit waits for no disk
-- flush (it cost one fsync per decision, two per generation). After a crash the table is
-- empty: every allowance starts full again. Unlogged tables are not replicated, and need not
-- be: limits are decided on the primary.
ALTER TABLE rate_limits SET UNLOGGED;
