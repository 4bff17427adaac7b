-- Cached prompt tokens of a finished request (a part of prompt_tokens), for
-- status and the per-model summary. NULL when the provider did not say.
ALTER TABLE requests ADD COLUMN cached_tokens INTEGER;
