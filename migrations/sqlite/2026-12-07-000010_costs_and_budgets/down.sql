ALTER TABLE users DROP COLUMN budget_per_month_nano_usd;
ALTER TABLE users DROP COLUMN budget_per_day_nano_usd;
ALTER TABLE api_keys DROP COLUMN budget_per_month_nano_usd;
ALTER TABLE api_keys DROP COLUMN budget_per_day_nano_usd;
ALTER TABLE quota_counters DROP COLUMN cost_nano_usd;
ALTER TABLE usage_daily DROP COLUMN cost_nano_usd;
ALTER TABLE generations DROP COLUMN cost_nano_usd;
