-- One row a request of the job; the source of truth for its state and result.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE requests (
    idx               INTEGER PRIMARY KEY,   -- input order
    custom_id         TEXT    NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,
    state             INTEGER NOT NULL DEFAULT 0, -- 0 pending, 1 in flight, 2 done, 3 failed
    attempts          INTEGER NOT NULL DEFAULT 0, -- sends so far, over every run
    url               TEXT    NOT NULL,
    body              TEXT    NOT NULL,
    model             TEXT,
    est_prompt        INTEGER NOT NULL,
    est_output        INTEGER NOT NULL,
    last_error        TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    cost_usd          REAL
);

-- The scheduler's order: priority, then input order, over pending work only.
CREATE INDEX requests_pending ON requests (priority DESC, idx) WHERE state = 0;
-- Counts by state, start-up recovery and the key check read by state.
CREATE INDEX requests_state ON requests (state);

-- Output lines committed but not yet appended to the output file: a small
-- queue (rows are deleted once written), so that the requests table keeps
-- its import size instead of holding each result until it is written.
CREATE TABLE output_queue (
    idx  INTEGER PRIMARY KEY,  -- the request
    line TEXT    NOT NULL      -- its output line, without the newline
);
