-- Money: what each generation cost, summed per key and day, and budgets beside quotas. Every
-- amount is a whole number of nano-dollars (10^-9 USD), never a float; 0 on older rows.
ALTER TABLE generations ADD COLUMN cost_nano_usd BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN cost_nano_usd BIGINT NOT NULL DEFAULT 0;
-- A counter holds the images and the dollars reserved and spent in its period.
ALTER TABLE quota_counters ADD COLUMN cost_nano_usd BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN budget_per_day_nano_usd BIGINT;
ALTER TABLE api_keys ADD COLUMN budget_per_month_nano_usd BIGINT;
ALTER TABLE users ADD COLUMN budget_per_day_nano_usd BIGINT;
ALTER TABLE users ADD COLUMN budget_per_month_nano_usd BIGINT;
