DROP TABLE idempotency_keys;
DROP INDEX generations_by_object;
ALTER TABLE generations DROP COLUMN deleted_at;
ALTER TABLE generations DROP COLUMN mode;
ALTER TABLE api_keys DROP COLUMN mode;
