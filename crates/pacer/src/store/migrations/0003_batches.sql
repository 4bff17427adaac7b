-- Provider batches (`pacer run --via batch`): one row per batch this job
-- sends through OpenAI's Batch API or Anthropic's Message Batches. Every id
-- the provider hands out is committed here before the next step, so a run
-- killed at any point resumes the batch instead of creating it again.
CREATE TABLE batches (
    id          INTEGER PRIMARY KEY,     -- local id; OpenAI metadata pacer_batch
    api         TEXT    NOT NULL,        -- 'openai' | 'anthropic'
    endpoint    TEXT    NOT NULL,        -- e.g. '/v1/chat/completions', '/v1/messages'
    model       TEXT,
    state       TEXT    NOT NULL,        -- planned, uploaded, submitted, ended, done, deferred, failed
    file_id     TEXT,                    -- OpenAI input file, once uploaded
    creating_at INTEGER,                 -- unix ms just before the create call (crash repair)
    batch_id    TEXT,                    -- the provider's batch id, once created
    status      TEXT,                    -- the provider's last status
    output_file_id TEXT,                 -- OpenAI, once ended
    error_file_id  TEXT,                 -- OpenAI, once ended
    results_url TEXT,                    -- Anthropic, once ended
    lines       INTEGER NOT NULL,
    est_tokens  INTEGER NOT NULL,        -- prompt + max output, as limiters count
    worst_usd   REAL,                    -- reserved against --max-cost while open
    error       TEXT,                    -- why it failed or was deferred
    created_at  INTEGER NOT NULL,        -- unix ms
    updated_at  INTEGER NOT NULL         -- unix ms
);

-- The batch a request is in (NULL: none, or it returned to pending). A
-- request in a batch is in flight (state 1) until its result is written.
ALTER TABLE requests ADD COLUMN batch INTEGER;
CREATE INDEX requests_batch ON requests (batch) WHERE batch IS NOT NULL;
