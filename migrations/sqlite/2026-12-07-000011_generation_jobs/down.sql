DROP TABLE generation_jobs;
DELETE FROM generations WHERE status IN ('queued', 'running', 'canceled');
