DROP TABLE generation_jobs;
DELETE FROM generations WHERE status IN ('queued', 'running', 'canceled');
ALTER TABLE generations DROP CONSTRAINT IF EXISTS generations_status_check;
ALTER TABLE generations ADD CONSTRAINT generations_status_check
    CHECK (status IN ('succeeded', 'failed'));
