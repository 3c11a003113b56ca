-- Which account an admin email (NB_ADMIN_EMAILS) stands for: the first account that held it.
-- Kept when that account is erased, so that whoever registers the email next is not an admin
-- until the operator releases it (`nanobanana admin release <email>`).
CREATE TABLE admin_bindings (
    email     TEXT PRIMARY KEY,
    user_id   TEXT NOT NULL,
    bound_at  TIMESTAMP NOT NULL
);
