-- What each generation made (model catalog): the shape asked for, the pixel size read from
-- the image, and the tokens Google counted (usageMetadata). Null on older rows and when
-- Google sent no counts.
ALTER TABLE generations ADD COLUMN aspect_ratio TEXT;
ALTER TABLE generations ADD COLUMN resolution TEXT;
ALTER TABLE generations ADD COLUMN width INTEGER;
ALTER TABLE generations ADD COLUMN height INTEGER;
ALTER TABLE generations ADD COLUMN input_tokens BIGINT;
ALTER TABLE generations ADD COLUMN input_text_tokens BIGINT;
ALTER TABLE generations ADD COLUMN input_image_tokens BIGINT;
ALTER TABLE generations ADD COLUMN output_tokens BIGINT;
ALTER TABLE generations ADD COLUMN output_image_tokens BIGINT;
ALTER TABLE generations ADD COLUMN output_text_tokens BIGINT;
ALTER TABLE generations ADD COLUMN thinking_tokens BIGINT;
ALTER TABLE generations ADD COLUMN total_tokens BIGINT;
-- Conversational edits: the generation a turn continues, and what continuing it needs (the
-- text it sent, the storage keys of its input images, the model's parts with their
-- signatures), as JSON.
ALTER TABLE generations ADD COLUMN previous_generation_id TEXT;
ALTER TABLE generations ADD COLUMN turn TEXT;
