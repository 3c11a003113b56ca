//! Object storage adapters (R2/S3, local disk, inline): arrive with the generation issue.
