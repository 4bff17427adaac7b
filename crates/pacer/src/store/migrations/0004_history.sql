-- The run's history, for `pacer report` and the dashboard: every attempt
-- and the pace in force, written by the one writer in its batches. Kept
-- compact: times are integer milliseconds since the job's first run
-- (meta 'history_epoch_ms'), durations are deltas, codes are small integers.
-- A rowid table with no index: rows arrive in time order, and the report
-- reads them in one pass.
CREATE TABLE attempts (
    idx        INTEGER NOT NULL,  -- the request
    sent       INTEGER NOT NULL,  -- ms since the epoch, when it went out
    wait_ms    INTEGER NOT NULL,  -- queued for admission (slot, budget, pace) before sending
    latency_ms INTEGER NOT NULL,  -- sent to answered
    status     INTEGER NOT NULL,  -- HTTP status; 0 when no answer came (transport error)
    outcome    INTEGER NOT NULL,  -- 0 success, 1 retried, 2 failed for good, 3 stopped the run
    est_tokens INTEGER NOT NULL,  -- pacer's estimate (prompt + max output)
    tokens     INTEGER,           -- real prompt + completion tokens, when reported
    cost_micro INTEGER            -- real cost in micro-USD, when known
);

-- The pace in force: a row when it changes, at most one a second.
CREATE TABLE pace (
    at          INTEGER NOT NULL, -- ms since the epoch
    rpm         REAL,             -- NULL: no request limit
    tpm         REAL,             -- NULL: no token limit
    concurrency INTEGER NOT NULL,
    source      INTEGER NOT NULL  -- 0 configured, 1 headers, 2 learned, 3 unlimited
);

-- One row a run of the job: its configured limits and budget, and how it ended.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    started     INTEGER NOT NULL, -- ms since the epoch
    ended       INTEGER,          -- NULL while running (or after a crash)
    via         TEXT    NOT NULL, -- 'live' | 'batch'
    max_cost    REAL,             -- --max-cost, USD
    rpm         REAL,             -- --rpm
    tpm         REAL,             -- --tpm
    concurrency INTEGER,          -- --concurrency
    stop        TEXT              -- why it stopped early, if it did
);

-- Failed attempts by kind ('HTTP 429', 'timeout', ...): a count and the
-- first one's text. Bounded by the kinds there are, not by the attempts.
CREATE TABLE attempt_errors (
    kind    TEXT PRIMARY KEY,
    n       INTEGER NOT NULL,
    example TEXT NOT NULL
) WITHOUT ROWID;
