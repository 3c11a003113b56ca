DROP TABLE usage_daily;
DROP TABLE api_keys;
DROP TABLE users;
